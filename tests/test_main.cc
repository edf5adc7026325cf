// The test binary's main: gtest's, after pinning the BLAS kernels of child processes.
#include <gtest/gtest.h>

#include <cstdlib>

#include "util/blas_kernels.h"

int main(int argc, char** argv) {
  // The CLI tests compare numbers from `mnemo` child processes with numbers computed here. Left alone, a
  // child on a CPU that OpenBLAS does not know would re-run itself with faster kernels whose results
  // differ in the last bits (util/blas_kernels.h); pinning OPENBLAS_CORETYPE to this process's kernels
  // makes every process compute alike. blas_kernels_test.cc tests the re-run with the variable unset.
  if (const char* core = mnemo::BlasCoreName(); core != nullptr) setenv("OPENBLAS_CORETYPE", core, 0);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
