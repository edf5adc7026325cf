// VectorIndex::Save and VectorIndex::Load: one self-checking file (the 128-byte header of
// index_file_format.h, then FAISS's payload), checked before FAISS parses a byte, with IVF lists optionally
// memory-mapped; and Rep::CheckLoaded, which checks what FAISS deserialized against the header.
#include "indexes/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/impl/io.h>
#include <faiss/index_io.h>
#include <faiss/invlists/DirectMap.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/invlists/OnDiskInvertedLists.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string_view>
#include <typeinfo>
#include <utility>

#include "indexes/index_file_format.h"
#include "indexes/index_spec.h"
#include "indexes/vector_index_rep.h"
#include "util/file_util.h"
#include "util/hash.h"

namespace mnemo {
namespace {

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};
using UniqueFile = std::unique_ptr<FILE, FileCloser>;

// Reads the payload (everything after the header) of an open file into `out`.
Status ReadPayload(FILE* file, uint64_t size, const std::string& path, std::vector<uint8_t>* out) {
  out->resize(size);
  if (size > 0 && std::fread(out->data(), 1, size, file) != size) {
    return Status::IOError(path + ": read failed");
  }
  return Status::OK();
}

// CRC32 of the next `size` bytes of `file`, read in fixed chunks so a huge memory-mapped index does not
// need a buffer of its own size.
Status StreamCrc32(FILE* file, uint64_t size, const std::string& path, uint32_t* crc) {
  std::vector<uint8_t> chunk(size_t{1} << 20);
  uint32_t c = 0;
  while (size > 0) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(size, chunk.size()));
    if (std::fread(chunk.data(), 1, want, file) != want) return Status::IOError(path + ": read failed");
    c = Crc32(chunk.data(), want, c);
    size -= want;
  }
  *crc = c;
  return Status::OK();
}

// FAISS reads bool and enum fields by copying the file's bytes into them, so a damaged payload can leave a
// bool that is neither true nor false (or a metric that is no MetricType), and every later read of it is
// undefined: it may pass one check and fail the next. Such fields are checked byte-wise, before anything
// reads them (found by fuzz/index_file_fuzz).
template <typename T>
bool RawValueAtMost(const T& field, uint64_t max) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "a flag or enum field");
  uint64_t v = 0;
  std::memcpy(&v, &field, sizeof(T));  // little-endian: the low bytes
  return v <= max;
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

}  // namespace

// Everything FAISS deserialized is checked against the header and for internal consistency, so that a
// payload which passed its checksum but is not what the header promises (another index type, a bug in an
// old writer) is Corruption here instead of an out-of-bounds access later.
Status VectorIndex::Rep::CheckLoaded(const IndexFileHeader& header, bool mapped,
                                     const std::string& path) const {
  const Rep& rep = *this;
  auto corrupt = [&path](const std::string& what) { return Status::Corruption(path + ": " + what); };
  const faiss::Index& index = *rep.index;
  const int64_t ntotal = header.ntotal;
  if (!RawValueAtMost(index.is_trained, 1) || !RawValueAtMost(index.metric_type, 1)) {
    return corrupt("FAISS index header holds an invalid is_trained flag or metric");
  }
  if (index.d != rep.dim) {
    return corrupt("FAISS index has dimension " + std::to_string(index.d) + " but the header says " +
                   std::to_string(rep.dim));
  }
  if (index.metric_type != ToFaissMetric(rep.metric)) {
    return corrupt("FAISS index metric differs from header");
  }
  if (index.ntotal != ntotal) {
    return corrupt("FAISS index holds " + std::to_string(index.ntotal) + " vectors but the header says " +
                   std::to_string(ntotal));
  }
  const std::string type_error = "payload is not a \"" + rep.spec_string + "\" index";

  if (rep.spec.kind == IndexSpec::Kind::kFlat) {
    const faiss::IndexIDMap2* id_map = rep.flat;
    if (id_map == nullptr || typeid(index) != typeid(faiss::IndexIDMap2)) return corrupt(type_error);
    const auto* storage = dynamic_cast<const faiss::IndexFlat*>(id_map->index);
    // The storage's metric is what FAISS searches with (a crafted one it does not implement would fail
    // every search instead of the load).
    if (storage == nullptr || !RawValueAtMost(storage->metric_type, 1) || storage->metric_type != index.metric_type ||
        storage->ntotal != ntotal ||
        storage->codes.size() != static_cast<size_t>(ntotal) * storage->code_size ||
        storage->code_size != sizeof(float) * rep.dim) {
      return corrupt(type_error + " (bad flat storage)");
    }
    if (id_map->id_map.size() != static_cast<size_t>(ntotal)) {
      return corrupt("id map size differs from ntotal");
    }
    // A smaller reverse map means an id occurs twice.
    if (id_map->rev_map.size() != static_cast<size_t>(ntotal)) return corrupt("duplicate ids in index");
    for (idx_t id : id_map->id_map) {
      if (id < 0) return corrupt("negative id " + std::to_string(id) + " in index");
    }
    return Status::OK();
  }

  const faiss::IndexIVF* ivf = rep.ivf;
  const bool want_pq = rep.spec.kind == IndexSpec::Kind::kIvfPq;
  if (ivf == nullptr ||
      typeid(index) != (want_pq ? typeid(faiss::IndexIVFPQ) : typeid(faiss::IndexIVFFlat))) {
    return corrupt(type_error);
  }
  if (static_cast<int64_t>(ivf->nlist) != rep.spec.nlist) return corrupt(type_error + " (nlist differs)");
  if (want_pq) {
    const auto* ivfpq = static_cast<const faiss::IndexIVFPQ*>(ivf);
    if (!RawValueAtMost(ivfpq->by_residual, 1)) return corrupt(type_error + " (invalid by_residual flag)");
    // Compared as FAISS's size_t: cut to int, a huge nbits could pass as 8 and then be a shift past 63
    // (fuzz/regressions/index_file_crafted/pq-nbits-huge).
    if (ivfpq->pq.M != static_cast<size_t>(rep.spec.pq_m) || ivfpq->pq.nbits != static_cast<size_t>(rep.spec.pq_bits)) {
      return corrupt(type_error + " (PQ parameters differ)");
    }
    const faiss::ProductQuantizer& pq = ivfpq->pq;
    if (pq.d != static_cast<size_t>(rep.dim) || pq.dsub * pq.M != pq.d || pq.ksub != (size_t{1} << pq.nbits) ||
        (ivf->is_trained && pq.centroids.size() != pq.M * pq.ksub * pq.dsub)) {
      return corrupt(type_error + " (PQ codebook shape differs)");
    }
  }
  const faiss::Index* quantizer = ivf->quantizer;
  if (quantizer != nullptr && (!RawValueAtMost(quantizer->is_trained, 1) || !RawValueAtMost(quantizer->metric_type, 1))) {
    return corrupt("IVF coarse quantizer holds an invalid is_trained flag or metric");
  }
  if (quantizer == nullptr || quantizer->d != rep.dim ||
      (ivf->is_trained && quantizer->ntotal != rep.spec.nlist)) {
    return corrupt("IVF coarse quantizer does not match the index");
  }
  const faiss::InvertedLists* lists = ivf->invlists;
  if (lists == nullptr || lists->nlist != ivf->nlist || lists->code_size != ivf->code_size) {
    return corrupt("IVF inverted lists do not match the index");
  }
  if (ivf->direct_map.type != faiss::DirectMap::Hashtable ||
      ivf->direct_map.hashtable.size() != static_cast<size_t>(ntotal)) {
    return corrupt("IVF id map is missing or does not hold every vector");
  }
  int64_t listed = 0;
  for (size_t l = 0; l < lists->nlist; ++l) listed += static_cast<int64_t>(lists->list_size(l));
  if (listed != ntotal) {
    return corrupt("inverted lists hold " + std::to_string(listed) + " vectors, not " +
                   std::to_string(ntotal));
  }

  if (mapped) {
    // Every list must lie inside the mapping: reading past the end of a mapped file is SIGBUS.
    const auto* on_disk = dynamic_cast<const faiss::OnDiskInvertedLists*>(lists);
    if (on_disk == nullptr) return corrupt("memory-mapped load produced in-memory lists");
    const size_t entry_bytes = on_disk->code_size + sizeof(idx_t);
    for (const faiss::OnDiskOneList& l : on_disk->lists) {
      if (l.size > l.capacity || l.offset > on_disk->totsize ||
          l.capacity > (on_disk->totsize - l.offset) / entry_bytes) {
        return corrupt("inverted list extends past the end of the file");
      }
    }
    return Status::OK();
  }

  // In memory, Remove will index lists by the DirectMap's (list, offset) pairs: check every one.
  const auto* array = dynamic_cast<const faiss::ArrayInvertedLists*>(lists);
  if (array == nullptr) return corrupt("unexpected inverted list type");
  for (size_t l = 0; l < array->nlist; ++l) {
    if (array->codes[l].size() != array->ids[l].size() * array->code_size) {
      return corrupt("inverted list " + std::to_string(l) + " has codes and ids of different lengths");
    }
  }
  for (const auto& [id, location] : ivf->direct_map.hashtable) {
    const size_t l = faiss::lo_listno(location);
    const size_t offset = faiss::lo_offset(location);
    if (id < 0 || location < 0 || l >= array->nlist || offset >= array->ids[l].size() ||
        array->ids[l][offset] != id) {
      return corrupt("IVF id map entry for id " + std::to_string(id) + " is inconsistent");
    }
  }
  return Status::OK();
}

Status VectorIndex::Save(const std::string& path) const {
  const Rep& rep = *rep_;
  std::shared_lock lock(rep.mu);
  if (rep.mapped_file != nullptr) {
    return WriteFileAtomically(
        path, std::string_view(reinterpret_cast<const char*>(rep.mapped_file), rep.mapped_file_size));
  }
  // Serialize after room reserved for the header, so the file is assembled in one buffer without a copy.
  faiss::VectorIOWriter writer;
  writer.data.resize(kIndexFileHeaderSize);
  MNEMO_RETURN_IF_ERROR(RunFaiss(Status::IOError, path + ": serializing index",
                                 [&] { faiss::write_index(rep.index.get(), &writer); }));
  IndexFileHeader header;
  header.dim = rep.dim;
  header.metric = MetricCode(rep.metric);
  header.spec = rep.spec_string;
  header.ntotal = rep.index->ntotal;
  header.payload_size = writer.data.size() - kIndexFileHeaderSize;
  header.payload_crc = Crc32(writer.data.data() + kIndexFileHeaderSize, header.payload_size);
  const std::string encoded = EncodeIndexFileHeader(header);
  std::memcpy(writer.data.data(), encoded.data(), kIndexFileHeaderSize);
  return WriteFileAtomically(
      path, std::string_view(reinterpret_cast<const char*>(writer.data.data()), writer.data.size()));
}

Status VectorIndex::Load(const std::string& path, const LoadOptions& options,
                         std::unique_ptr<VectorIndex>* out) {
  UniqueFile file(std::fopen(path.c_str(), "rbe"));
  if (file == nullptr) {
    if (errno == ENOENT) return Status::NotFound(path + ": no such index file");
    return Status::IOError(path + ": cannot open: " + std::strerror(errno));
  }
  struct stat st;
  if (::fstat(::fileno(file.get()), &st) != 0) {
    return Status::IOError(path + ": fstat failed: " + std::strerror(errno));
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);

  std::string header_bytes(std::min<uint64_t>(file_size, kIndexFileHeaderSize), '\0');
  if (!header_bytes.empty() &&
      std::fread(header_bytes.data(), 1, header_bytes.size(), file.get()) != header_bytes.size()) {
    return Status::IOError(path + ": read failed");
  }
  IndexFileHeader header;
  MNEMO_RETURN_IF_ERROR(DecodeIndexFileHeader(header_bytes, path, &header));
  if (header.payload_size != file_size - kIndexFileHeaderSize) {
    return Status::Corruption(path + ": header promises a " + std::to_string(header.payload_size) +
                              "-byte index but the file holds " +
                              std::to_string(file_size - kIndexFileHeaderSize) +
                              " bytes after the header (truncated or overwritten?)");
  }
  auto rep = std::make_unique<Rep>();
  if (!MetricFromCode(header.metric, &rep->metric)) {
    return Status::Corruption(path + ": unknown metric code " + std::to_string(header.metric));
  }
  Status s = ParseIndexSpec(header.spec, header.dim, &rep->spec);
  if (!s.ok()) return Status::Corruption(path + ": header holds an invalid spec: " + s.message());
  if (options.expected_dim != -1 && options.expected_dim != header.dim) {
    return Status::InvalidArgument(path + ": index has dimension " + std::to_string(header.dim) +
                                   ", expected " + std::to_string(options.expected_dim));
  }
  rep->dim = header.dim;
  rep->spec_string = rep->spec.ToString();
  rep->read_only = options.mmap;

  // Flat indexes have no inverted lists to map, so they are always read into memory.
  const bool mapped = options.mmap && rep->spec.is_ivf();
  const std::string context = path + ": cannot parse FAISS index";
  if (mapped) {
    if (options.verify_checksum) {
      uint32_t crc = 0;
      MNEMO_RETURN_IF_ERROR(StreamCrc32(file.get(), header.payload_size, path, &crc));
      if (crc != header.payload_crc) {
        return Status::Corruption(path + ": index payload checksum mismatch (expected " +
                                  Hex(header.payload_crc) + ", got " + Hex(crc) + ")");
      }
    }
    if (std::fseek(file.get(), kIndexFileHeaderSize, SEEK_SET) != 0) {
      return Status::IOError(path + ": seek failed");
    }
    // IO_FLAG_MMAP maps the file and records each list's offset from the current file position, so the
    // header in front of the payload is fine. The mapping outlives the FILE.
    MNEMO_RETURN_IF_ERROR(RunFaiss(Status::Corruption, context, [&] {
      rep->index.reset(faiss::read_index(file.get(), faiss::IO_FLAG_MMAP | faiss::IO_FLAG_READ_ONLY |
                                                   faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE));
    }));
  } else {
    faiss::VectorIOReader reader;
    reader.name = path;
    MNEMO_RETURN_IF_ERROR(ReadPayload(file.get(), header.payload_size, path, &reader.data));
    const uint32_t crc = Crc32(reader.data.data(), reader.data.size());
    if (crc != header.payload_crc) {
      return Status::Corruption(path + ": index payload checksum mismatch (expected " +
                                Hex(header.payload_crc) + ", got " + Hex(crc) + ")");
    }
    MNEMO_RETURN_IF_ERROR(
        RunFaiss(Status::Corruption, context, [&] {
          rep->index.reset(faiss::read_index(&reader, faiss::IO_FLAG_SKIP_PRECOMPUTE_TABLE));
        }));
  }
  if (rep->index == nullptr) return Status::Corruption(context);
  rep->flat = dynamic_cast<faiss::IndexIDMap2*>(rep->index.get());
  rep->ivf = dynamic_cast<faiss::IndexIVF*>(rep->index.get());
  MNEMO_RETURN_IF_ERROR(rep->CheckLoaded(header, mapped, path));
  if (rep->index->is_trained) {
    MNEMO_RETURN_IF_ERROR(RunFaiss(Status::Corruption, context, [&] { rep->PrepareSearch(); }));
  }
  if (mapped) {
    const auto* on_disk = static_cast<const faiss::OnDiskInvertedLists*>(rep->ivf->invlists);
    if (on_disk->totsize != file_size) return Status::Corruption(path + ": file changed while loading");
    rep->mapped_file = on_disk->ptr;
    rep->mapped_file_size = on_disk->totsize;
  }
  out->reset(new VectorIndex(std::move(rep)));
  return Status::OK();
}

}  // namespace mnemo
