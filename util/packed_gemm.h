// PackedGemm: y = x W + b for a few rows of x (2..256: a decoding step of a batch of requests) against
// a weight packed once. OpenBLAS 0.3.21 copies the whole weight into its packed layout on every sgemm
// call; with 16 rows that copy cost more than the products (30% of a batched GPT-2-small decoding step in
// `sgemm_itcopy`, docs/PERFORMANCE.md). Here the weight [K, N] is packed once into panels of 32 columns,
// each panel's K rows contiguous, and a register-blocked kernel (AVX-512, or AVX2 with FMA) streams the
// panels, reading each weight element once per block of up to 8 rows of x.
//
// No LibTorch here: lm/ wraps it (Conv1D caches a packed copy of its weight for inference).
// Thread-safety: PackedWeights is immutable after Pack; PackedGemm may run concurrently on disjoint
// panel ranges (callers split [0, panels()) across threads).
#pragma once

#include <cstdint>
#include <memory>

namespace mnemo {

class PackedWeights {
 public:
  static constexpr int64_t kPanel = 32;  // columns per panel

  // w: [k, n] row-major (GPT-2's Conv1D layout [in, out]).
  static std::unique_ptr<PackedWeights> Pack(const float* w, int64_t k, int64_t n);

  int64_t k() const { return k_; }
  int64_t n() const { return n_; }
  int64_t panels() const { return (n_ + kPanel - 1) / kPanel; }
  // Panel p: k rows of kPanel floats (columns past n are zero), 64-byte aligned.
  const float* panel(int64_t p) const { return data_.get() + p * k_ * kPanel; }
  size_t bytes() const { return static_cast<size_t>(panels() * k_ * kPanel) * sizeof(float); }

 private:
  struct Free {
    void operator()(float* p) const;
  };
  int64_t k_ = 0, n_ = 0;
  std::unique_ptr<float, Free> data_;
};

// True when this CPU has a kernel (AVX-512F, or AVX2 and FMA; x86-64 builds only); callers use their
// matrix product otherwise.
bool PackedGemmSupported();

// For panels [p0, p1): y[m, j] = bias[j] + sum_i x[m, i] w[i, j] for m < rows and the panels' columns
// j < n. x: [rows, k] row-major, y: [rows, n] row-major, bias: [n] or null. Requires PackedGemmSupported().
void PackedGemm(const float* x, int64_t rows, const PackedWeights& w, const float* bias, float* y, int64_t p0,
                int64_t p1);

// All panels, split over up to SetPackedGemmThreads' count of OpenMP threads (1 when the calling thread
// set none), each thread given at least ~256K multiply-adds.
// Turns the packed kernel on for the calling thread's model products (lm/gpt.h PackedProduct) with this
// many threads for PackedGemmThreads; 0 (every thread's default) turns it off. A setting of its own, not
// OpenMP's: LibTorch resets a thread's OpenMP count to its global intra-op count at the thread's first
// parallel operation. Only the decoding thread of batched serving turns it on.
void SetPackedGemmThreads(int threads);
// The calling thread's setting (0: off).
int PackedGemmThreadsSetting();
void PackedGemmThreads(const float* x, int64_t rows, const PackedWeights& w, const float* bias, float* y);

}  // namespace mnemo
