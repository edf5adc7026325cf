// Which OpenBLAS kernels the process runs. OpenBLAS (as Debian builds it: one library for every x86-64 CPU)
// picks its kernels once, when it loads, from the CPU's family and model, and reads OPENBLAS_CORETYPE only
// then. Debian 12's OpenBLAS 0.3.21 does not know CPUs newer than itself (this project's build machine:
// family 6 model 207, which has AVX-512) and falls back to its Prescott kernels (SSE3), which ran the
// default model's forward pass 2.3x slower than its Skylake-X kernels (docs/PERFORMANCE.md). The only
// remedy from inside the process is to run it again with OPENBLAS_CORETYPE set.
#pragma once

namespace mnemo {

// The OpenBLAS core type to ask for instead of `current` (OpenBLAS's name for its kernels, e.g.
// "Prescott"), or null to keep it: only OpenBLAS's fallback "Prescott" is replaced, by "SkylakeX" on a
// CPU with AVX-512 F/BW/VL/DQ/CD, else by "Haswell" on one with AVX2 and FMA.
const char* BetterBlasCoreType(const char* current, bool avx512, bool avx2_fma);

// When the BLAS is OpenBLAS, OPENBLAS_CORETYPE is unset and BetterBlasCoreType names better kernels for
// this CPU, sets OPENBLAS_CORETYPE and re-executes this program (the file /proc/self/exe names) with
// `argv`; the variable being set, the new process keeps its kernels. Returns when there is nothing to
// do, or when exec fails (the process then goes on with the kernels it has). Call first thing in main,
// before any threads exist.
// Costs one more program start (about 0.45 s for mnemo, most of it loading LibTorch), on such CPUs only.
void RunWithBestBlasKernels(char** argv);

// OpenBLAS's name for the kernels this process runs, or null when the BLAS is not OpenBLAS.
const char* BlasCoreName();

}  // namespace mnemo
