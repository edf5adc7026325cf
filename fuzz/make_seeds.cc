// Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/), all from the product's own writers
// where a format has one (VectorIndex::Save, WriteSafetensors, DatastoreWriter, StateConfig::ToJson), so the
// seeds are valid files of today's formats, plus hand-written edge cases. Deterministic; every file is
// small (< 64 KB). Usage: make_seeds <corpus dir> (the fuzz/corpus directory is committed; rerun this after a
// format change and commit the result).
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "fuzz/datastore_fixture.h"
#include "fuzz/fuzz_util.h"
#include "indexes/vector_index.h"
#include "lm/bpe_tokenizer.h"
#include "lm/safetensors.h"
#include "memory/state_dir.h"
#include "util/file_util.h"

#include <nlohmann/json.hpp>

namespace {

std::string g_root;

void Check(const mnemo::Status& s, const std::string& what) {
  if (!s.ok()) {
    std::fprintf(stderr, "make_seeds: %s: %s\n", what.c_str(), s.ToString().c_str());
    std::exit(1);
  }
}

std::string ReadOrDie(const std::string& path) {
  std::string text;
  Check(mnemo::ReadFileToString(path, &text), path);
  return text;
}

void Seed(const std::string& target, const std::string& name, const std::string& bytes) {
  const std::string dir = g_root + "/" + target;
  Check(mnemo::EnsureDirectory(dir), dir);
  if (bytes.size() >= 64 * 1024) {
    std::fprintf(stderr, "make_seeds: %s/%s is %zu bytes, over 64 KB\n", target.c_str(), name.c_str(), bytes.size());
    std::exit(1);
  }
  mnemo_fuzz::WriteFileOrDie(dir + "/" + name, bytes);
}

std::string Byte(uint8_t b) { return std::string(1, static_cast<char>(b)); }

std::vector<float> Vectors(int n, int dim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<size_t>(n) * dim);
  for (float& x : v) x = std::round(normal(rng) * 8) / 8;
  return v;
}

// ---- index_file, index_spec ------------------------------------------------------------------------

std::string IndexFile(const std::string& spec, mnemo::Metric metric, int dim, int train, int add) {
  std::unique_ptr<mnemo::VectorIndex> index;
  Check(mnemo::VectorIndex::Create(dim, spec, metric, &index), spec);
  if (train > 0) Check(index->Train(train, Vectors(train, dim, 1).data()), spec + " train");
  if (add > 0) {
    std::vector<int64_t> ids;
    for (int i = 0; i < add; ++i) ids.push_back(1000 + 3 * i);
    Check(index->Add(add, Vectors(add, dim, 2).data(), ids.data()), spec + " add");
  }
  const std::string path = mnemo_fuzz::ScratchDir() + "/seed.idx";
  Check(index->Save(path), spec + " save");
  return ReadOrDie(path);
}

void IndexSeeds() {
  struct Kind {
    const char* name;
    const char* spec;
    mnemo::Metric metric;
    int dim, train, add;
  };
  const Kind kinds[] = {
      {"flat-l2", "Flat", mnemo::Metric::kL2, 4, 0, 5},
      {"flat-ip", "Flat", mnemo::Metric::kInnerProduct, 3, 0, 4},
      {"flat-empty", "Flat", mnemo::Metric::kL2, 2, 0, 0},
      {"ivf-flat", "IVF2,Flat", mnemo::Metric::kL2, 4, 8, 6},
      {"ivf-flat-ip", "IVF3,Flat", mnemo::Metric::kInnerProduct, 2, 6, 5},
      {"ivf-untrained", "IVF4,Flat", mnemo::Metric::kL2, 4, 0, 0},
      {"ivf-pq4", "IVF2,PQ2x4", mnemo::Metric::kL2, 4, 16, 6},
      {"ivf-pq8", "IVF2,PQ1", mnemo::Metric::kL2, 2, 256, 6},
  };
  for (const Kind& k : kinds) {
    const std::string file = IndexFile(k.spec, k.metric, k.dim, k.train, k.add);
    Seed("index_file", std::string(k.name) + "-mem", Byte(0) + file);
    Seed("index_file", std::string(k.name) + "-mmap", Byte(1) + file);
    // Every seed must load, in memory and memory-mapped (a seed that does not would teach the fuzzer nothing).
    for (bool mmap : {false, true}) {
      mnemo::LoadOptions options;
      options.mmap = mmap;
      std::unique_ptr<mnemo::VectorIndex> loaded;
      Check(mnemo::VectorIndex::Load(mnemo_fuzz::ScratchDir() + "/seed.idx", options, &loaded),
            std::string(k.name) + (mmap ? " mmap load" : " load"));
    }
    if (std::string(k.name) == "ivf-flat" || std::string(k.name) == "flat-l2") {
      // The header alone (index_spec's second reading of its input), with and without its checksum fixed.
      const std::string header = file.substr(0, 128);
      const std::string dim(reinterpret_cast<const char*>(&k.dim), 4);
      Seed("index_spec", std::string(k.name) + "-header", Byte(0) + dim + header);
    }
  }
  Seed("index_file", "empty", "");
  Seed("index_file", "short-header", Byte(0) + std::string("MNEMOIDX\x01\0\0\0", 12));

  const std::pair<const char*, int> specs[] = {
      {"Flat", 8}, {"IVF1,Flat", 1}, {"IVF1024,Flat", 768}, {"IVF4096,PQ32", 768}, {"IVF16,PQ8x4", 64},
      {"IVF16777216,Flat", 65536}, {"IVF16777217,Flat", 4}, {"IVF8,PQ3", 8}, {"IVF08,Flat", 8},
      {"IVF8,PQ2x17", 8}, {"IVF8,PQ2x0", 8}, {"Flat", 0}, {"HNSW32", 16}, {"IVF,Flat", 4}};
  int i = 0;
  for (const auto& [spec, dim] : specs) {
    Seed("index_spec", "spec-" + std::to_string(i++), Byte(0) + std::string(reinterpret_cast<const char*>(&dim), 4) + spec);
  }
}

// ---- safetensors -----------------------------------------------------------------------------------

void SafetensorsSeeds() {
  const std::string path = mnemo_fuzz::ScratchDir() + "/seed.safetensors";
  const std::vector<float> w = {1, 2, 3, 4, 5, 6};
  const std::vector<uint16_t> h = {0x3c00, 0xbc00, 0x0000, 0x7bff};
  const std::vector<int64_t> ids = {7, -1};
  const uint8_t flag = 1;
  Check(mnemo::WriteSafetensors(path,
                                {{"wte.weight", mnemo::DType::kF32, {2, 3}, w.data(), w.size() * 4},
                                 {"h.0.ln_1.bias", mnemo::DType::kF16, {4}, h.data(), 8},
                                 {"ids", mnemo::DType::kI64, {2}, ids.data(), 16},
                                 {"flag", mnemo::DType::kBool, {}, &flag, 1},
                                 {"empty", mnemo::DType::kBF16, {0, 5}, nullptr, 0}},
                                {{"format", "pt"}, {"mnemo.config", R"({"n_layer":1})"}}),
        "safetensors");
  Seed("safetensors", "model", ReadOrDie(path));
  Check(mnemo::WriteSafetensors(path, {}, {}), "safetensors empty");
  Seed("safetensors", "no-tensors", ReadOrDie(path));
  auto with_header = [](const std::string& header, const std::string& data) {
    std::string out;
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
    return out + header + data;
  };
  Seed("safetensors", "all-dtypes",
       with_header(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},)"
                   R"("b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},)"
                   R"("c":{"dtype":"I16","shape":[1],"data_offsets":[12,14]},)"
                   R"("d":{"dtype":"I8","shape":[1],"data_offsets":[14,15]},)"
                   R"("e":{"dtype":"U8","shape":[1],"data_offsets":[15,16]}})",
                   std::string(16, '\x01')));
  Seed("safetensors", "overlap",
       with_header(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                   "abcd"));
  Seed("safetensors", "duplicate",
       with_header(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                   "x"));
  Seed("safetensors", "huge-shape",
       with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""));
  Seed("safetensors", "padded", with_header(R"({"__metadata__":{"k":"v"}}     )", ""));
  Seed("safetensors", "short", std::string("\x10\0\0\0", 4));
}

// ---- datastore_open, datastore_manifest, state_json --------------------------------------------------

void DatastoreSeeds() {
  const auto& bases = mnemo_fuzz::BaseDatastores();
  for (size_t b = 0; b < bases.size(); ++b) {
    const std::string dir = mnemo_fuzz::ScratchDir() + "/" + bases[b].name;
    mnemo_fuzz::BuildBaseDatastore(bases[b], dir);
    const std::string manifest = ReadOrDie(dir + "/manifest.json");
    const std::string documents = ReadOrDie(dir + "/documents.jsonl");
    Seed("datastore_open", bases[b].name, Byte(static_cast<uint8_t>(b)) + manifest + std::string(1, '\0') + documents);
    // The same files, index memory-mapped and checksums verified (mode / 3 == 3).
    Seed("datastore_open", std::string(bases[b].name) + "-mmap-verify",
         Byte(static_cast<uint8_t>(b + 9)) + manifest + std::string(1, '\0') + documents);
    Seed("datastore_manifest", bases[b].name, manifest);
  }
  // Without provenance: the manifest without "documents", and no documents.jsonl.
  {
    std::string manifest = ReadOrDie(mnemo_fuzz::ScratchDir() + "/flat/manifest.json");
    const size_t at = manifest.find(",\n  \"documents\"");
    if (at != std::string::npos) manifest = manifest.substr(0, at) + "\n}\n";
    Seed("datastore_open", "no-provenance", Byte(0) + manifest);
    Seed("datastore_manifest", "no-provenance", manifest);
  }
  Seed("datastore_manifest", "old-format",
       R"({"format":"mnemo-datastore","format_version":1,"model_fingerprint":"m","key_layer":"h.3","dim":768,)"
       R"("count":1000,"index_spec":"IVF64,PQ16","source":"corpus.txt","source_tokens":1001,)"
       R"("keys":{"file":"keys.f16","dtype":"float16","crc32":1},"values":{"file":"values.i32","dtype":"int32","crc32":2}})");

  mnemo::StateConfig c;
  c.model_path = "/srv/mnemo/model";
  c.datastore_path = "/srv/mnemo/datastore";
  c.model_fingerprint = "3f2a9c";
  c.dim = 768;
  c.created_at_ms = 1733270400000;
  Seed("state_json", "state", c.ToJson());
  c.datastore_path.clear();
  Seed("state_json", "facts-only", c.ToJson());
  Seed("state_json", "future", R"({"format_version":2,"model":"m","datastore":"","model_fingerprint":"f","dim":4,"created_at_ms":0})");
  Seed("state_json", "wrong-types", R"({"format_version":"1","model":1,"datastore":null,"model_fingerprint":[],"dim":4.5,"created_at_ms":-1})");
}

// ---- tokenizer_files, tokenizer_encode ---------------------------------------------------------------

void TokenizerSeeds() {
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}, {"in", "g"}, {"Ċ", "Ċ"}, {"Ã", "©"}};
  std::string vocab = "{";
  int id = 0;
  auto add = [&](const std::string& token) {
    vocab += (id == 0 ? "" : ", ") + nlohmann::json(token).dump() + ": " + std::to_string(id);
    ++id;
  };
  for (uint8_t b : mnemo::ByteLevelOrder()) add(std::string(mnemo::ByteLevelSymbol(b)));
  for (const auto& [l, r] : merges) add(l + r);
  add("<|endoftext|>");
  vocab += "}";
  std::string merges_txt = "#version: 0.2\n";
  for (const auto& [l, r] : merges) merges_txt += l + " " + r + "\n";
  const std::string nul(1, '\0');
  Seed("tokenizer_files", "hf", vocab + nul + merges_txt + nul + "Then the thing\n\ncafé, sing 123 <|endoftext|>");
  Seed("tokenizer_files", "crlf-no-text", vocab + nul + "Ġ t\r\nh e\r\n");
  Seed("tokenizer_files", "mismatch", vocab + nul + "Ġ q\n");
  Seed("tokenizer_files", "bad-vocab", R"({"a": 0, "b": 0})" + nul + "a b\n");
  Seed("tokenizer_files", "missing-bytes", R"({"!": 0, "\"": 1, "<|endoftext|>": 2})" + nul);

  Seed("tokenizer_encode", "english", "The quick brown fox jumps over the lazy dog. It's 12:30, isn't it?\n");
  Seed("tokenizer_encode", "contractions", "'s 't 're 've 'm 'll 'd 'S 'T we'll they've");
  Seed("tokenizer_encode", "whitespace", "a  b\t\tc\n\n\n   d \r\n \u00a0\u2003x\u180e y   ");
  Seed("tokenizer_encode", "unicode", "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \u0645\u0631\u062d\u0628\u0627 \U0001F600 \u0661\u0662 \u00bd");
  const char invalid[] = "ab\xff\xfe c\xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf x";
  Seed("tokenizer_encode", "invalid-utf8", std::string(invalid, sizeof(invalid) - 1));
  Seed("tokenizer_encode", "eot", "<|endoftext|>Hello<|endoftext|>");
  Seed("tokenizer_encode", "long-word", std::string(300, 'a') + " " + std::string(70, 'b'));
  Seed("tokenizer_encode", "nul", std::string("\0a\0 \0", 5));
}

// ---- text formats: api_keys, http_front, json_fields, parse -------------------------------------------

void TextSeeds() {
  Seed("gpt_config", "gpt2", R"({"model_type":"gpt2","vocab_size":50257,"n_positions":1024,"n_ctx":1024,"n_embd":768,)"
                             R"("n_layer":12,"n_head":12,"n_inner":null,"activation_function":"gelu_new",)"
                             R"("layer_norm_epsilon":1e-05,"bos_token_id":50256,"eos_token_id":50256})");
  Seed("gpt_config", "memory", R"({"model_type":"gpt2","vocab_size":512,"n_ctx":128,"n_embd":64,"n_layer":2,"n_head":4,)"
                               R"("n_inner":256,"mnemo_memory_layer":1,"mnemo_memory_topk":32,"mnemo_memory_mode":"joint"})");
  Seed("gpt_config", "bad", R"({"model_type":"gpt2","vocab_size":-1,"n_embd":65,"n_layer":1,"n_head":2,"n_positions":8,)"
                            R"("activation_function":"relu","layer_norm_epsilon":0})");
  Seed("documents", "docs", "{\"text\": \"The first document.\", \"source\": \"a.txt\"}\n\n"
                            "{\"text\": \"caf\\u00e9\\n\", \"id\": 7, \"metadata\": {\"k\": 1}}\r\n{\"text\": \"\"}\n");
  Seed("documents", "bad-line", "{\"text\": 1}\n");
  Seed("documents", "not-json", "text\n");

  Seed("api_keys", "keys", "# role key [name]\nread  r-0123456789abcdef alice\nadmin a-0123456789abcdef ops.team@x\n\n");
  Seed("api_keys", "unnamed", "read 0123456789abcdef0123\nadmin fedcba9876543210fedc # comment\r\n");
  Seed("api_keys", "errors", "root 0123456789abcdef\n");
  Seed("api_keys", "short-key", "read short\n");
  Seed("api_keys", "name-is-key", "read 0123456789abcdef 0123456789abcdef\n");
  Seed("api_keys", "dup-name", "read 0123456789abcdef n\nadmin 0123456789abcdeg n\n");

  const std::string m = Byte(0), small = Byte(8), bytewise = Byte(1), odd = Byte(5);
  Seed("http_front", "get", m + "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
  Seed("http_front", "get-query", odd + "GET /v1/facts?limit=5&after=abc%20d HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n");
  Seed("http_front", "post-length", m + "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                        "Content-Length: 27\r\n\r\n{\"prompt\":\"a\",\"max_tokens\":1}");
  Seed("http_front", "post-bytewise", bytewise + "POST /v1/tokenize HTTP/1.1\r\ncontent-length: 12\r\n\r\n{\"text\":\"a\"}");
  Seed("http_front", "chunked", m + "POST /v1/facts HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n");
  Seed("http_front", "chunked-split", Byte(3) + "PUT /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
  Seed("http_front", "pipelined", m + "GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\nConnection: close\r\n\r\nGET /d HTTP/1.1\r\n\r\n");
  Seed("http_front", "keepalive-close", m + "DELETE /v1/facts/1 HTTP/1.1\r\nX-Close: 1\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
  Seed("http_front", "expect", m + "POST /e HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody");
  Seed("http_front", "gzip", m + "POST /g HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nbody");
  Seed("http_front", "cl-and-te", m + "POST /s HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  Seed("http_front", "two-lengths", m + "POST /s HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nbodyy");
  Seed("http_front", "too-large", small + "POST /big HTTP/1.1\r\nContent-Length: 65\r\n\r\n" + std::string(65, 'a'));
  Seed("http_front", "chunk-too-large", small + "POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n" + std::string(65, 'a') + "\r\n0\r\n\r\n");
  Seed("http_front", "head-too-large", small + "GET / HTTP/1.1\r\nX-Pad: " + std::string(300, 'p') + "\r\n\r\n");
  Seed("http_front", "folding", m + "GET / HTTP/1.1\r\nX-A: 1\r\n  continued\r\n\r\n");
  Seed("http_front", "bare-lf", m + "GET / HTTP/1.1\nHost: x\n\n");
  Seed("http_front", "leading-crlf", m + "\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n");
  Seed("http_front", "http10", m + "PATCH /p HTTP/1.0\r\nContent-Length: 0\r\n\r\n");

  Seed("json_fields", "completion", R"({"model":"mnemo","prompt":"Once upon a time","max_tokens":16,"temperature":0.7,)"
                                    R"("top_p":0.9,"n":2,"logprobs":5,"echo":true,"stop":["\n","."],"seed":42,"stream":false,)"
                                    R"("knn":{"enabled":true,"k":64,"lambda":0.25,"temperature":1.0,"nprobe":8,"recompute":true},)"
                                    R"("return_neighbors":3,"memory":{"id":1,"topk":32},"ignore_eos":false})");
  Seed("json_fields", "score", R"({"text":"abc","truncate_prompt":true,"knn":{"enabled":false}})");
  Seed("json_fields", "facts", R"({"facts":[{"text":"Paris is in France.","client_id":"c1","metadata":{"src":"wiki"}},{"text":"x"}]})");
  Seed("json_fields", "audit", R"({"canaries":8,"references":8,"members":16,"extraction_samples":4,"finetune_steps":0,)"
                               R"("seed":1,"memory_capacity":100,"datastore_documents":2,"repetitions":[1,4]})");
  Seed("json_fields", "memory", R"({"name":"notes","capacity":4096})");
  Seed("json_fields", "wrong-types", R"({"max_tokens":"16","temperature":true,"n":1.5,"echo":1,"text":["a"],"seed":18446744073709551615,"logprobs":-1})");
  Seed("json_fields", "nulls", R"({"max_tokens":null,"model":null,"knn":null,"stream":null})");
  Seed("json_fields", "bad-utf8", std::string("{\"text\":\"\xc3\"}"));
  Seed("json_fields", "nested", std::string(40, '[') + std::string(40, ']'));
  Seed("json_fields", "numbers", R"({"temperature":1e308,"top_p":-0.0,"lambda":1e-400,"k":4096,"nprobe":65537,"id":9223372036854775807})");

  Seed("parse", "int", Byte(0) + "12345");
  Seed("parse", "min", Byte(0) + "-9223372036854775808");
  Seed("parse", "overflow", Byte(0) + "9223372036854775808");
  Seed("parse", "ranged", Byte(1) + std::string("\x01\0\0\0\0\0\0\0\x64\0\0\0\0\0\0\0", 16) + "50");
  Seed("parse", "list", Byte(2) + "1,4,16");
  Seed("parse", "list-empty-item", Byte(0) + "1,,2");
  Seed("parse", "junk", Byte(0) + " 12x");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus dir>\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  IndexSeeds();
  SafetensorsSeeds();
  DatastoreSeeds();
  TokenizerSeeds();
  TextSeeds();
  std::printf("seeds written under %s\n", g_root.c_str());
  return 0;
}
