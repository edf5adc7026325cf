#include "util/blas_threads.h"

#include <dlfcn.h>

#include <cstdlib>

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

}  // namespace mnemo
