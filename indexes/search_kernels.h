// Building blocks of the exact searches (ivf_search.cc, flat_search.cc): candidates ordered by (distance,
// id), the squared-L2 kernel that reproduces FAISS's scalar distances bit for bit, and the selection of the
// k best. Internal to indexes/.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

// The BLAS and LAPACK FAISS links (Fortran interface, as FAISS declares it).
extern "C" {
int sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
           const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
           const int* ldc);
int dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const double* alpha,
           const double* a, const int* lda, const double* b, const int* ldb, const double* beta, double* c,
           const int* ldc);
int dsyev_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w, double* work,
           const int* lwork, int* info);
int sgemv_(const char* trans, const int* m, const int* n, const float* alpha, const float* a, const int* lda,
           const float* x, const int* incx, const float* beta, float* y, const int* incy);
}

namespace mnemo {

struct Candidate {
  float distance;
  int64_t id;
};

inline bool Closer(const Candidate& a, const Candidate& b) {
  return a.distance < b.distance || (a.distance == b.distance && a.id < b.id);
}

// The inverted lists of a memory-mapped index (LoadOptions::mmap) point into the file, where FAISS's layout
// puts each list's codes and ids at any byte offset: their floats and ids are read with memcpy, a plain load
// that, unlike a dereference, promises no alignment (fuzz/index_file_fuzz, docs/FUZZING.md).
template <typename T>
inline T LoadUnaligned(const T* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// A candidate's distance: NaN (from a non-finite query) becomes +infinity, so that candidates stay ordered.
inline float OrderableDistance(float distance) {
  return std::isnan(distance) ? std::numeric_limits<float>::infinity() : distance;
}

// out[i] = {squared L2 distance from x to vectors[i], ids[i]}, computed exactly as FAISS's scalar
// fvec_L2sqr_ref (what Debian's baseline build of FAISS 1.7.3 runs for Flat and IVF-Flat): coordinates in
// order, each product rounded to float before it is added to a running float sum.
void ScanVectors(const float* x, const float* vectors, const int64_t* ids, size_t count, size_t d,
                 Candidate* out);

// Sorts `items` by (distance, id) (Closer); `scratch` is reused space.
void SortCandidates(std::vector<Candidate>* items, std::vector<Candidate>* scratch);

// Drops candidates that cannot be among the k best (by distance), keeping at least those k exactly.
void KeepAtLeastBest(std::vector<Candidate>* items, size_t k);

}  // namespace mnemo
