// IndexSpec: the FAISS factory-style index descriptions that VectorIndex supports, parsed and validated.
//
// Supported forms (n, m, b positive decimal integers without sign or leading zeros):
//   "Flat"            exact search over every stored vector
//   "IVF<n>,Flat"     n inverted lists (k-means coarse quantizer), vectors stored uncompressed
//   "IVF<n>,PQ<m>"    n inverted lists, residuals product-quantized into m codes of 8 bits
//   "IVF<n>,PQ<m>x<b>" the same with b bits per code (1..16)
// m must divide the vector dimension. Anything else is InvalidArgument with a message listing these forms.
//
// Thread-safety: IndexSpec is a plain value.
#pragma once

#include <cstdint>
#include <string>

#include "util/status.h"

namespace mnemo {

struct IndexSpec {
  enum class Kind { kFlat, kIvfFlat, kIvfPq };

  Kind kind = Kind::kFlat;
  int64_t nlist = 0;  // IVF kinds only
  int pq_m = 0;       // kIvfPq only: sub-quantizers per vector
  int pq_bits = 0;    // kIvfPq only: bits per sub-quantizer code

  bool is_ivf() const { return kind != Kind::kFlat; }
  // The canonical spelling ("IVF100,PQ8" for 8 bits, "IVF100,PQ8x4" otherwise); ParseIndexSpec of it
  // gives back an equal spec.
  std::string ToString() const;
  // Fewest vectors Train accepts: k-means needs at least one point per centroid, for the coarse
  // quantizer (nlist) and for each PQ sub-quantizer (2^bits). 0 for Flat, which needs no training.
  int64_t MinTrainingVectors() const;
};

// Parses `spec` for vectors of dimension `dim`. InvalidArgument for an unsupported form, a dimension
// outside [1, kMaxIndexDim], nlist outside [1, kMaxIndexLists], PQ bits outside [1, 16], or m not
// dividing dim.
Status ParseIndexSpec(const std::string& spec, int dim, IndexSpec* out);

// Dimensions above this are rejected: far past any model width mnemo uses, and keeps
// dim * sizeof(float) comfortably inside 32-bit arithmetic in FAISS kernels.
constexpr int kMaxIndexDim = 65536;
// FAISS's DirectMap packs a list number into 32 bits; 2^24 lists is already far past the
// sqrt(N)..16*sqrt(N) rule of thumb for any datastore that fits in memory.
constexpr int64_t kMaxIndexLists = int64_t{1} << 24;

}  // namespace mnemo
