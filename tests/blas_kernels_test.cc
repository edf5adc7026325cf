// util/blas_kernels: which OpenBLAS kernels mnemo asks for, and its re-run when OpenBLAS falls back to its
// baseline kernels on a CPU it does not know.
#include "util/blas_kernels.h"

#include <gtest/gtest.h>

#include <string>

#include "tests/test_util.h"

namespace mnemo {
namespace {

TEST(BlasKernelsTest, OnlyOpenBlasFallbackIsReplacedAndByWhatTheCpuRuns) {
  EXPECT_STREQ(BetterBlasCoreType("Prescott", /*avx512=*/true, /*avx2_fma=*/true), "SkylakeX");
  EXPECT_STREQ(BetterBlasCoreType("Prescott", false, true), "Haswell");
  EXPECT_EQ(BetterBlasCoreType("Prescott", false, false), nullptr);  // a CPU that is what it says
  EXPECT_EQ(BetterBlasCoreType("Haswell", true, true), nullptr);     // OpenBLAS knew the CPU
  EXPECT_EQ(BetterBlasCoreType("Zen", true, true), nullptr);
  EXPECT_EQ(BetterBlasCoreType(nullptr, true, true), nullptr);       // not OpenBLAS
}

// The "Core: ..." lines OpenBLAS prints at load with OPENBLAS_VERBOSE=2, one per process start.
std::string CoreLines(const std::string& environment) {
  std::string out;
  const int rc = testing::RunCommand(environment + " OPENBLAS_VERBOSE=2 " MNEMO_BINARY " --version 2>&1 | grep '^Core:'",
                                     &out);
  EXPECT_EQ(rc, 0) << out;
  return out;
}

TEST(BlasKernelsTest, MnemoNeverRunsOpenBlasFallbackKernelsOnACpuWithAvx2) {
  if (BlasCoreName() == nullptr) GTEST_FAIL() << "the BLAS is not OpenBLAS: this build's CI installs it";
  __builtin_cpu_init();
  const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const std::string lines = CoreLines("env -u OPENBLAS_CORETYPE");
  ASSERT_NE(lines.rfind("Core:"), std::string::npos) << "OpenBLAS printed no core";
  const std::string last = lines.substr(lines.rfind("Core:"));
  if (avx2_fma) {
    EXPECT_EQ(last.find("Prescott"), std::string::npos) << lines;
  } else {
    EXPECT_EQ(lines, last) << "re-ran on a CPU without AVX2: " << lines;
  }
}

TEST(BlasKernelsTest, AnOpenBlasCoreTypeTheUserSetIsKept) {
  EXPECT_EQ(CoreLines("env OPENBLAS_CORETYPE=Prescott"), "Core: Prescott\n");
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {  // else Haswell's kernels cannot run
    EXPECT_EQ(CoreLines("env OPENBLAS_CORETYPE=Haswell"), "Core: Haswell\n");
  }
}

}  // namespace
}  // namespace mnemo
