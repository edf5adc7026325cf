// The thread count of the BLAS behind libblas.so.3. OpenBLAS keeps its own thread pool, sized to every core
// and busy-waiting between calls, outside OpenMP's and LibTorch's settings; it can only be changed through
// its own symbols, looked up at run time so the build does not depend on which BLAS is installed.
#pragma once

namespace mnemo {

// Sets OpenBLAS's thread count (n >= 1). Returns false, changing nothing, when the BLAS is not OpenBLAS or
// when OPENBLAS_NUM_THREADS is set: the operator's explicit choice wins over mnemo's sizing.
bool SetBlasThreads(int n);

// OpenBLAS's thread count; 1 when the BLAS is not OpenBLAS (the reference BLAS is single-threaded).
int BlasThreads();

}  // namespace mnemo
