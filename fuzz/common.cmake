# What both fuzz projects (fuzz/CMakeLists.txt and fuzz/routes/CMakeLists.txt) need: clang, the sanitizer
# flags, and FAISS/BLAS/LAPACK/libgomp found by hand. Include it after project(); MNEMO_ROOT must be set.
if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  message(FATAL_ERROR "The fuzz targets need clang (libFuzzer): configure with "
                      "-DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_C_COMPILER=clang-14")
endif()

set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_EXPORT_COMPILE_COMMANDS ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Fuzz CACHE STRING "" FORCE)
endif()

# -O1 -g: what libFuzzer's documentation recommends (fast enough, readable reports). Every UBSan finding is
# fatal, so a run that reports one fails instead of scrolling past it.
set(MNEMO_SANITIZE address,undefined)
set(MNEMO_FUZZ_FLAGS -O1 -g -fno-omit-frame-pointer -fsanitize=${MNEMO_SANITIZE} -fno-sanitize-recover=all)

find_package(PkgConfig REQUIRED)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(HTTPLIB REQUIRED IMPORTED_TARGET cpp-httplib)
find_package(nlohmann_json REQUIRED)
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)
# FAISS by hand, not find_package(faiss): Debian ships it as a static library built with GCC's OpenMP, and
# its faiss-config.cmake links OpenMP::OpenMP_CXX, which under clang would be LLVM's libomp. Nothing of
# mnemo's own uses OpenMP, so GCC's libgomp is linked for FAISS and no -fopenmp is used; BLAS and LAPACK as
# faiss-targets.cmake lists them (ivf_search.cc calls sgemm_ too).
find_library(FAISS_LIBRARY faiss REQUIRED)
find_library(BLAS_LIBRARY blas REQUIRED)
find_library(LAPACK_LIBRARY lapack REQUIRED)
execute_process(COMMAND gcc -print-file-name=libgomp.so OUTPUT_VARIABLE GOMP_LIBRARY OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT EXISTS "${GOMP_LIBRARY}")
  find_library(GOMP_LIBRARY NAMES gomp libgomp.so.1 REQUIRED)
endif()
