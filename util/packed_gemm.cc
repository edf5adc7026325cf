#include "util/packed_gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define MNEMO_PACKED_X86 1
#endif
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

namespace mnemo {
namespace {

constexpr int64_t kP = PackedWeights::kPanel;

#ifdef MNEMO_PACKED_X86
// Rows [0, MR) of x against one panel: acc[r] holds columns 0..31 of row r (two 16-float halves). The
// loops over r are unrolled so the accumulators live in registers (GCC at -O2 keeps them on the stack
// otherwise: a load and a store per multiply-add, half the speed).
template <int MR>
__attribute__((target("avx512f"))) void Block512(const float* x, int64_t k, const float* panel, const float* bias,
                                                  float* out /* [MR][32] */) {
  __m512 a0[MR], a1[MR];
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
  const __m512 b1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a0[r] = b0, a1[r] = b1;
  for (int64_t i = 0; i < k; ++i) {
    const __m512 w0 = _mm512_load_ps(panel + i * kP), w1 = _mm512_load_ps(panel + i * kP + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 xv = _mm512_set1_ps(x[r * k + i]);
      a0[r] = _mm512_fmadd_ps(xv, w0, a0[r]);
      a1[r] = _mm512_fmadd_ps(xv, w1, a1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) _mm512_storeu_ps(out + r * kP, a0[r]), _mm512_storeu_ps(out + r * kP + 16, a1[r]);
}

// The same with AVX2: one 16-column half of the panel per call (12 accumulators of 8 floats).
template <int MR>
__attribute__((target("avx2,fma"))) void Block256(const float* x, int64_t k, const float* panel, int64_t half,
                                                   const float* bias, float* out /* [MR][32] */) {
  __m256 a0[MR], a1[MR];
  const float* p = panel + half * 16;
  const __m256 b0 = bias ? _mm256_loadu_ps(bias + half * 16) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + half * 16 + 8) : _mm256_setzero_ps();
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) a0[r] = b0, a1[r] = b1;
  for (int64_t i = 0; i < k; ++i) {
    const __m256 w0 = _mm256_load_ps(p + i * kP), w1 = _mm256_load_ps(p + i * kP + 8);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 xv = _mm256_broadcast_ss(x + r * k + i);
      a0[r] = _mm256_fmadd_ps(xv, w0, a0[r]);
      a1[r] = _mm256_fmadd_ps(xv, w1, a1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(out + r * kP + half * 16, a0[r]), _mm256_storeu_ps(out + r * kP + half * 16 + 8, a1[r]);
  }
}

#endif  // MNEMO_PACKED_X86

enum class Isa { kNone, kAvx2, kAvx512 };

Isa Detect() {
#ifdef MNEMO_PACKED_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kNone;
}

Isa Cpu() {
  static const Isa isa = [] {
    // MNEMO_PACKED_GEMM=0 turns the kernels off (benchmarks compare with the BLAS path); =avx2 keeps to
    // the AVX2 kernel on a CPU that has AVX-512 too (tests run both kernels on one machine).
    const char* env = std::getenv("MNEMO_PACKED_GEMM");
    const Isa best = Detect();
    if (env != nullptr && std::strcmp(env, "0") == 0) return Isa::kNone;
    if (env != nullptr && std::strcmp(env, "avx2") == 0 && best == Isa::kAvx512) {
      return Isa::kAvx2;  // every AVX-512 CPU has AVX2 and FMA
    }
    return best;
  }();
  return isa;
}

#ifdef MNEMO_PACKED_X86
// Rows [0, mr) (mr <= 8 for AVX-512, <= 6 for AVX2) of x against panel p, into out [mr][32].
void Block(Isa isa, const float* x, int64_t mr, int64_t k, const float* panel, const float* bias, float* out) {
  if (isa == Isa::kAvx512) {
    switch (mr) {
      case 1: return Block512<1>(x, k, panel, bias, out);
      case 2: return Block512<2>(x, k, panel, bias, out);
      case 3: return Block512<3>(x, k, panel, bias, out);
      case 4: return Block512<4>(x, k, panel, bias, out);
      case 5: return Block512<5>(x, k, panel, bias, out);
      case 6: return Block512<6>(x, k, panel, bias, out);
      case 7: return Block512<7>(x, k, panel, bias, out);
      default: return Block512<8>(x, k, panel, bias, out);
    }
  }
  for (int64_t half = 0; half < 2; ++half) {
    switch (mr) {
      case 1: Block256<1>(x, k, panel, half, bias, out); break;
      case 2: Block256<2>(x, k, panel, half, bias, out); break;
      case 3: Block256<3>(x, k, panel, half, bias, out); break;
      case 4: Block256<4>(x, k, panel, half, bias, out); break;
      case 5: Block256<5>(x, k, panel, half, bias, out); break;
      default: Block256<6>(x, k, panel, half, bias, out); break;
    }
  }
}

#else
// No kernel off x86: PackedGemmSupported() is false, so nothing calls it.
void Block(Isa, const float*, int64_t, int64_t, const float*, const float*, float*) {}
#endif

}  // namespace

void PackedWeights::Free::operator()(float* p) const { std::free(p); }

std::unique_ptr<PackedWeights> PackedWeights::Pack(const float* w, int64_t k, int64_t n) {
  auto packed = std::unique_ptr<PackedWeights>(new PackedWeights());
  packed->k_ = k, packed->n_ = n;
  const size_t bytes = std::max<size_t>(64, packed->bytes());
  void* data = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (data == nullptr) throw std::bad_alloc();
  packed->data_.reset(static_cast<float*>(data));
  std::memset(data, 0, bytes);
  float* out = packed->data_.get();
  for (int64_t p = 0; p < packed->panels(); ++p) {
    const int64_t c0 = p * kP, width = std::min(kP, n - c0);
    for (int64_t i = 0; i < k; ++i) std::memcpy(out + (p * k + i) * kP, w + i * n + c0, width * sizeof(float));
  }
  return packed;
}

bool PackedGemmSupported() { return Cpu() != Isa::kNone; }

void PackedGemm(const float* x, int64_t rows, const PackedWeights& w, const float* bias, float* y, int64_t p0,
                int64_t p1) {
  const Isa isa = Cpu();
  const int64_t k = w.k(), n = w.n(), mr_max = isa == Isa::kAvx512 ? 8 : 6;
  alignas(64) float out[8 * kP];
  alignas(64) float bias_panel[kP];
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t c0 = p * kP, width = std::min(kP, n - c0);
    const float* b = nullptr;
    if (bias != nullptr) {
      // The last panel's bias is padded with zeros (its kernel reads 32 of them).
      std::memset(bias_panel, 0, sizeof(bias_panel));
      std::memcpy(bias_panel, bias + c0, width * sizeof(float));
      b = bias_panel;
    }
    for (int64_t m0 = 0; m0 < rows; m0 += mr_max) {
      const int64_t mr = std::min(mr_max, rows - m0);
      Block(isa, x + m0 * k, mr, k, w.panel(p), b, out);
      for (int64_t r = 0; r < mr; ++r) std::memcpy(y + (m0 + r) * n + c0, out + r * kP, width * sizeof(float));
    }
  }
}

namespace {
thread_local int packed_threads = 0;
}  // namespace

void SetPackedGemmThreads(int threads) { packed_threads = std::max(0, threads); }

int PackedGemmThreadsSetting() { return packed_threads; }

void PackedGemmThreads(const float* x, int64_t rows, const PackedWeights& w, const float* bias, float* y) {
  const int64_t panels = w.panels(), per_panel = rows * w.k() * kP;
  const int64_t most = std::max<int64_t>(1, panels * per_panel / (int64_t{1} << 18));
  const int threads = static_cast<int>(std::min<int64_t>({std::max(1, packed_threads), most, panels}));
  if (threads <= 1) return PackedGemm(x, rows, w, bias, y, 0, panels);
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    PackedGemm(x, rows, w, bias, y, panels * t / n, panels * (t + 1) / n);
  }
}

}  // namespace mnemo
