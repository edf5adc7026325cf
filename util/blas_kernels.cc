#include "util/blas_kernels.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>

namespace mnemo {

const char* BetterBlasCoreType(const char* current, bool avx512, bool avx2_fma) {
  if (current == nullptr || std::strcmp(current, "Prescott") != 0) return nullptr;
  if (avx512) return "SkylakeX";
  if (avx2_fma) return "Haswell";
  return nullptr;
}

const char* BlasCoreName() {
  using CoreName = char* (*)();
  auto* fn = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  return fn != nullptr ? fn() : nullptr;
}

void RunWithBestBlasKernels(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice, or this was the re-run
#if defined(__GNUC__) && defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                      __builtin_cpu_supports("avx512cd");
  const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const char* better = BetterBlasCoreType(BlasCoreName(), avx512, avx2_fma);
  if (better == nullptr) return;
  // The program's own path, not /proc/self/exe: the kernel names the new process after the path it was
  // started from, and ps, pgrep and killall look for "mnemo", not "exe".
  char path[PATH_MAX];
  const ssize_t length = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (length <= 0) return;
  path[length] = '\0';
  if (setenv("OPENBLAS_CORETYPE", better, /*overwrite=*/1) != 0) return;
  execv(path, argv);
  unsetenv("OPENBLAS_CORETYPE");  // exec failed: say nothing untrue to child processes
#else
  (void)argv;
#endif
}

}  // namespace mnemo
