#include "util/blas_threads.h"

#include <dlfcn.h>

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

namespace mnemo {

bool SetBlasThreads(int n) {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return false;
  using SetThreads = void (*)(int);
  auto* fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (fn == nullptr || n < 1) return false;
  fn(n);
  return true;
}

int BlasThreads() {
  using GetThreads = int (*)();
  auto* fn = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return fn != nullptr ? fn() : 1;
}

OmpThreadsScope::OmpThreadsScope(int n) {
  if (n <= 0 || n == omp_get_max_threads()) return;
  saved_ = omp_get_max_threads();
  omp_set_num_threads(n);
}

OmpThreadsScope::~OmpThreadsScope() {
  if (saved_ > 0) omp_set_num_threads(saved_);
}

int HardwareThreads() { return static_cast<int>(std::max(1u, std::thread::hardware_concurrency())); }

int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<int64_t>(pages) * page : 0;
}

}  // namespace mnemo
