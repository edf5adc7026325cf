// Thread counts: the BLAS behind libblas.so.3, and OpenMP's for a scope.
// The BLAS's: OpenBLAS keeps its own thread pool, sized to every core
// and busy-waiting between calls, outside OpenMP's and LibTorch's settings; it can only be changed through
// its own symbols, looked up at run time so the build does not depend on which BLAS is installed.
#pragma once

#include <cstdint>

namespace mnemo {

// Sets OpenBLAS's thread count (n >= 1). Returns false, changing nothing, when the BLAS is not OpenBLAS or
// when OPENBLAS_NUM_THREADS is set: the operator's explicit choice wins over mnemo's sizing.
bool SetBlasThreads(int n);

// OpenBLAS's thread count; 1 when the BLAS is not OpenBLAS (the reference BLAS is single-threaded).
int BlasThreads();

// Sets the calling thread's OpenMP thread count to n for the scope's life (n <= 0: changes nothing), and
// restores it after. OpenMP's setting is per thread, so other threads are unaffected.
class OmpThreadsScope {
 public:
  explicit OmpThreadsScope(int n);
  ~OmpThreadsScope();
  OmpThreadsScope(const OmpThreadsScope&) = delete;
  OmpThreadsScope& operator=(const OmpThreadsScope&) = delete;

 private:
  int saved_ = 0;  // 0: nothing to restore
};

// The machine's cores as the C++ runtime sees them (at least 1).
int HardwareThreads();
// The machine's physical memory in bytes (sysconf); 0 when the system does not say.
int64_t PhysicalMemoryBytes();

}  // namespace mnemo
