// A datastore larger than the model's text, for index scale only (bench/shards-scale.sh): entry i's key is
// the source datastore's key i mod M (a real kNN-LM key) plus Gaussian noise of `noise` times the keys'
// per-dimension standard deviation, its value the source's value. The keys are not hidden states of any
// text, so perplexities over it mean nothing; what it measures is an index of that many entries: build,
// split, resident memory and search latency.
//
// Usage: mnemo_synth_datastore SOURCE_DATASTORE OUT_DIR ENTRIES [NOISE=0.1] [INDEX_SPEC=source's]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "memory/datastore.h"
#include "util/half.h"

using namespace mnemo;

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s SOURCE_DATASTORE OUT_DIR ENTRIES [NOISE=0.1] [INDEX_SPEC]\n", argv[0]);
    return 2;
  }
  const std::string source_dir = argv[1], out_dir = argv[2];
  const int64_t entries = std::atoll(argv[3]);
  const double noise = argc > 4 ? std::atof(argv[4]) : 0.1;
  std::unique_ptr<Datastore> source;
  DatastoreOpenOptions open;
  open.mmap_index = true;
  open.read_only = true;
  Status s = Datastore::Open(source_dir, open, &source);
  if (!s.ok() || entries < 1) {
    std::fprintf(stderr, "%s\n", s.ok() ? "ENTRIES must be positive" : s.ToString().c_str());
    return 1;
  }
  const DatastoreManifest m = source->manifest();
  const int dim = m.dim;
  const int64_t rows = source->slots();
  // Per-dimension standard deviation of the source keys (a sample of 100,000).
  std::vector<double> sum(dim, 0), sq(dim, 0);
  const int64_t sample = std::min<int64_t>(rows, 100000);
  for (int64_t i = 0; i < sample; ++i) {
    const uint16_t* k = source->key(i * (rows / sample));
    for (int d = 0; d < dim; ++d) {
      const double v = HalfToFloat(k[d]);
      sum[d] += v;
      sq[d] += v * v;
    }
  }
  std::vector<float> sigma(dim);
  for (int d = 0; d < dim; ++d) {
    const double mean = sum[d] / sample;
    sigma[d] = static_cast<float>(noise * std::sqrt(std::max(0.0, sq[d] / sample - mean * mean)));
  }
  std::unique_ptr<DatastoreWriter> writer;
  s = DatastoreWriter::Create(out_dir, dim, &writer);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::mt19937_64 rng(42);
  std::normal_distribution<float> normal;
  const int64_t batch = 65536;
  std::vector<float> keys(batch * dim);
  std::vector<int32_t> values(batch);
  for (int64_t at = 0; at < entries; at += batch) {
    const int64_t n = std::min(batch, entries - at);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t src = (at + i) % rows;
      const uint16_t* k = source->key(src);
      for (int d = 0; d < dim; ++d) keys[i * dim + d] = HalfToFloat(k[d]) + sigma[d] * normal(rng);
      values[i] = source->value(src);
    }
    s = writer->Append(n, keys.data(), values.data());
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.ToString().c_str());
      return 1;
    }
  }
  DatastoreManifest out = m;
  out.source = "synthetic: " + std::to_string(entries) + " entries, keys of " + source_dir + " plus noise " +
               std::to_string(noise) + " sigma (bench/synth_datastore.cc)";
  DatastoreFinishOptions finish;
  finish.index_spec = argc > 5 ? argv[5] : m.index_spec;
  finish.train_sample = m.train_sample > 0 ? m.train_sample : 262144;
  s = writer->Finish(out, finish);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("wrote %lld entries to %s\n", static_cast<long long>(entries), out_dir.c_str());
  return 0;
}
