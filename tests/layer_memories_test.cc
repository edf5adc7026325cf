// LayerMemories: the named key-value memories of a memorizing layer, durable in SQLite. Creating, listing
// and deleting memories; validating documents; searching through Reader (tags name document and
// position); reopening rebuilds the rings; deleting a document leaves the memory exactly as one that never
// read it (unbounded and FIFO); FIFO eviction counts; deleted content leaves no bytes in the files; Check;
// paging; ring snapshots (restored only when current, removed by deletes). Pairs are made up (no model): keys and values [heads, n, head_dim] from a seeded generator.
#include "memory/layer_memories.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lm/kv_memory.h"
#include "tests/test_util.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using testing::ScratchDir;

constexpr int64_t kHeads = 2;
constexpr int64_t kDim = 8;

LayerMemoriesOptions Options() {
  LayerMemoriesOptions o;
  o.heads = kHeads;
  o.head_dim = kDim;
  return o;
}

std::unique_ptr<LayerMemories> OpenStore(const std::string& path, const LayerMemoriesOptions& o = Options()) {
  std::unique_ptr<LayerMemories> m;
  Status s = LayerMemories::Open(path, o, &m);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return m;
}

// A document of n tokens: unit-length keys (so a query equal to a stored key retrieves that key first:
// <k, k> = 1 > <k, k'> for any other unit key k'), Gaussian values.
NewMemoryDocument MakeDoc(std::mt19937& rng, int64_t n, const std::string& text, const std::string& metadata = "") {
  NewMemoryDocument d;
  d.text = text;
  d.metadata_json = metadata;
  std::normal_distribution<float> normal;
  for (int64_t t = 0; t < n; ++t) d.tokens.push_back(static_cast<int32_t>(rng() % 50000));
  d.keys.resize(static_cast<size_t>(kHeads * n * kDim));
  d.values.resize(d.keys.size());
  for (int64_t i = 0; i < kHeads * n; ++i) {
    double norm = 0;
    for (int64_t j = 0; j < kDim; ++j) {
      const float x = normal(rng);
      d.keys[i * kDim + j] = x;
      norm += static_cast<double>(x) * x;
    }
    const float inv = static_cast<float>(1.0 / std::sqrt(norm));
    for (int64_t j = 0; j < kDim; ++j) d.keys[i * kDim + j] *= inv;
  }
  for (float& v : d.values) v = normal(rng);
  return d;
}

std::vector<float> RandomQueries(std::mt19937& rng, int64_t n) {
  std::normal_distribution<float> normal;
  std::vector<float> q(static_cast<size_t>(kHeads * n * kDim));
  for (float& x : q) x = normal(rng);
  return q;
}

struct Hits {
  std::vector<float> keys, values;
  std::vector<int64_t> tags;
};

Hits SearchAll(const KvMemory& m, const std::vector<float>& queries, int64_t n, int64_t k) {
  Hits h;
  h.keys.assign(static_cast<size_t>(kHeads * n * k * kDim), 123.0f);
  h.values.assign(h.keys.size(), 123.0f);
  h.tags.assign(static_cast<size_t>(kHeads * n * k), 77);
  Status s = m.Search(0, queries.data(), n, k, h.keys.data(), h.values.data(), h.tags.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  return h;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// A tag with its document id replaced by the document's index in the test's own bookkeeping (ids differ
// between two stores that read the same documents); -1 stays -1, an unknown id is flagged.
int64_t CanonicalTag(int64_t tag, const std::map<int64_t, int64_t>& index_of) {
  if (tag < 0) return tag;
  auto it = index_of.find(TagDocument(tag));
  if (it == index_of.end()) return (int64_t{1} << 62) + tag;
  return DocumentTag(it->second, TagPosition(tag));
}

std::vector<int64_t> CanonicalTags(const std::vector<int64_t>& tags, const std::map<int64_t, int64_t>& index_of) {
  std::vector<int64_t> out;
  for (int64_t t : tags) out.push_back(CanonicalTag(t, index_of));
  return out;
}

std::vector<MemoryDocument> AllDocuments(const LayerMemories& m, int64_t memory_id) {
  std::vector<MemoryDocument> all, page;
  int64_t after = 0, next = 0;
  do {
    Status s = m.ListDocuments(memory_id, after, 1000, &page, &next);
    EXPECT_TRUE(s.ok()) << s.ToString();
    if (!s.ok()) break;
    all.insert(all.end(), page.begin(), page.end());
    after = next;
  } while (next != 0);
  return all;
}

// The little-endian bytes of n floats, as the database stores them.
std::string FloatBytes(const float* f, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    uint32_t bits = 0;
    std::memcpy(&bits, f + i, sizeof(bits));
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((bits >> (8 * b)) & 0xff));
  }
  return out;
}

// Every regular file in `dir` (memories.db, -wal, -shm), name -> raw bytes.
std::map<std::string, std::string> ReadAllFiles(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::string bytes;
    EXPECT_TRUE(ReadFileToString(entry.path().string(), &bytes).ok());
    files[entry.path().filename().string()] = bytes;
  }
  return files;
}

// The files holding `needle`, comma-separated ("" when none does).
std::string FilesContaining(const std::string& dir, const std::string& needle) {
  std::string names;
  for (const auto& [name, bytes] : ReadAllFiles(dir)) {
    if (bytes.find(needle) != std::string::npos) names += (names.empty() ? "" : ",") + name;
  }
  return names;
}

// 1. Memories are created, listed, fetched and deleted; bad names and capacities create nothing.
TEST(LayerMemoriesTest, CreateListGetDelete) {
  ScratchDir dir;
  LayerMemoriesOptions o = Options();
  o.max_memories = 3;
  auto m = OpenStore(dir.File("memories.db"), o);
  ASSERT_NE(m, nullptr);
  MemoryInfo alpha, beta;
  ASSERT_TRUE(m->Create("alpha", 0, &alpha).ok());
  ASSERT_TRUE(m->Create("beta", 50, &beta).ok());
  EXPECT_NE(alpha.id, beta.id);
  EXPECT_EQ(alpha.name, "alpha");
  EXPECT_EQ(beta.capacity, 50);
  EXPECT_GT(alpha.created_at_ms, 0);

  std::mt19937 rng(1);
  MemoryDocument d;
  int64_t evicted = -1;
  ASSERT_TRUE(m->AddDocument(alpha.id, MakeDoc(rng, 7, "a1"), &d, &evicted).ok());
  ASSERT_TRUE(m->AddDocument(alpha.id, MakeDoc(rng, 5, "a2"), &d, &evicted).ok());
  ASSERT_TRUE(m->AddDocument(beta.id, MakeDoc(rng, 60, "b1"), &d, &evicted).ok());

  std::vector<MemoryInfo> list;
  ASSERT_TRUE(m->List(&list).ok());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, alpha.id);
  EXPECT_EQ(list[0].name, "alpha");
  EXPECT_EQ(list[0].capacity, 0);
  EXPECT_EQ(list[0].documents, 2);
  EXPECT_EQ(list[0].stored_tokens, 12);
  EXPECT_EQ(list[0].resident_tokens, 12);
  EXPECT_EQ(list[1].id, beta.id);
  EXPECT_EQ(list[1].name, "beta");
  EXPECT_EQ(list[1].capacity, 50);
  EXPECT_EQ(list[1].documents, 1);
  EXPECT_EQ(list[1].stored_tokens, 60);
  EXPECT_EQ(list[1].resident_tokens, 50);

  MemoryInfo got;
  ASSERT_TRUE(m->Get(beta.id, &got).ok());
  EXPECT_EQ(got.name, "beta");
  EXPECT_EQ(got.documents, 1);
  EXPECT_EQ(got.stored_tokens, 60);
  EXPECT_EQ(got.resident_tokens, 50);
  EXPECT_EQ(got.created_at_ms, beta.created_at_ms);

  int64_t deleted_docs = -1;
  ASSERT_TRUE(m->Delete(alpha.id, &deleted_docs).ok());
  EXPECT_EQ(deleted_docs, 2);
  EXPECT_TRUE(m->Get(alpha.id, &got).IsNotFound());
  std::unique_ptr<KvMemory> reader;
  EXPECT_TRUE(m->Reader(alpha.id, &reader).IsNotFound());
  EXPECT_TRUE(m->RebuiltReader(alpha.id, &reader).IsNotFound());
  EXPECT_TRUE(m->Delete(alpha.id, nullptr).IsNotFound());
  EXPECT_TRUE(m->Delete(9999, nullptr).IsNotFound());
  ASSERT_TRUE(m->List(&list).ok());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].id, beta.id);

  // Bad inputs: nothing created.
  MemoryInfo bad;
  EXPECT_TRUE(m->Create("negative", -1, &bad).IsInvalidArgument());
  EXPECT_TRUE(m->Create(std::string(300, 'n'), 0, &bad).IsInvalidArgument());
  EXPECT_TRUE(m->Create(std::string(257, 'n'), 0, &bad).IsInvalidArgument());
  ASSERT_TRUE(m->List(&list).ok());
  EXPECT_EQ(list.size(), 1u);
  // 256 bytes is allowed; the limit of 3 memories is enforced (a deleted one does not count).
  MemoryInfo c, d2;
  ASSERT_TRUE(m->Create(std::string(256, 'n'), 0, &c).ok());
  ASSERT_TRUE(m->Create("third", 10, &d2).ok());
  EXPECT_GT(c.id, alpha.id);  // ids are not reused
  EXPECT_TRUE(m->Create("fourth", 0, &bad).IsInvalidArgument());
  ASSERT_TRUE(m->List(&list).ok());
  EXPECT_EQ(list.size(), 3u);

  // The same after reopening.
  m.reset();
  m = OpenStore(dir.File("memories.db"), o);
  ASSERT_NE(m, nullptr);
  ASSERT_TRUE(m->List(&list).ok());
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].id, beta.id);
  EXPECT_EQ(list[0].documents, 1);
  EXPECT_EQ(list[0].resident_tokens, 50);
  EXPECT_EQ(list[1].name, std::string(256, 'n'));
  EXPECT_TRUE(m->Get(alpha.id, &got).IsNotFound());
}

// 2. Invalid documents are refused and write nothing.
TEST(LayerMemoriesTest, AddDocumentValidates) {
  ScratchDir dir;
  LayerMemoriesOptions o = Options();
  o.max_document_tokens = 10;
  auto m = OpenStore(dir.File("memories.db"), o);
  ASSERT_NE(m, nullptr);
  MemoryInfo info;
  ASSERT_TRUE(m->Create("mem", 0, &info).ok());
  std::mt19937 rng(2);
  MemoryDocument out;
  int64_t evicted = 0;

  NewMemoryDocument empty;
  empty.text = "empty";
  EXPECT_TRUE(m->AddDocument(info.id, empty, &out, &evicted).IsInvalidArgument());
  EXPECT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 11, "too long"), &out, &evicted).IsInvalidArgument());
  NewMemoryDocument short_keys = MakeDoc(rng, 4, "short keys");
  short_keys.keys.pop_back();
  EXPECT_TRUE(m->AddDocument(info.id, short_keys, &out, &evicted).IsInvalidArgument());
  NewMemoryDocument long_values = MakeDoc(rng, 4, "long values");
  long_values.values.push_back(1.0f);
  EXPECT_TRUE(m->AddDocument(info.id, long_values, &out, &evicted).IsInvalidArgument());
  NewMemoryDocument one_head = MakeDoc(rng, 4, "one head");
  one_head.keys.resize(one_head.keys.size() / 2);
  one_head.values.resize(one_head.values.size() / 2);
  EXPECT_TRUE(m->AddDocument(info.id, one_head, &out, &evicted).IsInvalidArgument());
  EXPECT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 4, "array", "[1]"), &out, &evicted).IsInvalidArgument());
  EXPECT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 4, "not json", "not json"), &out, &evicted).IsInvalidArgument());
  EXPECT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 4, "string", "\"x\""), &out, &evicted).IsInvalidArgument());

  std::vector<MemoryInfo> list;
  ASSERT_TRUE(m->List(&list).ok());
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].documents, 0);
  EXPECT_EQ(list[0].stored_tokens, 0);
  EXPECT_EQ(list[0].resident_tokens, 0);
  EXPECT_TRUE(AllDocuments(*m, info.id).empty());

  // Unknown memory: NotFound (for a valid document).
  EXPECT_TRUE(m->AddDocument(info.id + 100, MakeDoc(rng, 4, "nowhere"), &out, &evicted).IsNotFound());

  // The limit itself and an object metadata are fine; metadata and text come back.
  ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 10, "at the limit", "{\"source\": \"x\"}"), &out, &evicted).ok());
  EXPECT_EQ(out.tokens, 10);
  EXPECT_EQ(out.resident_tokens, 10);
  EXPECT_EQ(evicted, 0);
  MemoryDocument got;
  ASSERT_TRUE(m->GetDocument(info.id, out.id, /*with_text=*/true, &got).ok());
  EXPECT_EQ(got.text, "at the limit");
  EXPECT_EQ(got.metadata_json, "{\"source\": \"x\"}");
  ASSERT_TRUE(m->GetDocument(info.id, out.id, /*with_text=*/false, &got).ok());
  EXPECT_EQ(got.text, "");
  EXPECT_EQ(got.tokens, 10);
  EXPECT_EQ(got.resident_tokens, 10);
  ASSERT_TRUE(m->List(&list).ok());
  EXPECT_EQ(list[0].documents, 1);
  // Documents belong to their memory.
  MemoryInfo other;
  ASSERT_TRUE(m->Create("other", 0, &other).ok());
  EXPECT_TRUE(m->GetDocument(other.id, out.id, false, &got).IsNotFound());
  EXPECT_TRUE(m->DeleteDocument(other.id, out.id, nullptr).IsNotFound());
  EXPECT_TRUE(m->GetDocument(info.id, out.id, false, &got).ok());
  // A refused delete leaves no transaction open: the next write works.
  ASSERT_TRUE(m->AddDocument(other.id, MakeDoc(rng, 3, "next"), &got, nullptr).ok());
  ASSERT_TRUE(m->DeleteDocument(info.id, out.id, nullptr).ok());
  EXPECT_TRUE(AllDocuments(*m, info.id).empty());
}

// 3. Searching through Reader: a query equal to a stored key retrieves that pair first, bit for bit,
// and its tag names its document and position. Reader refuses appends.
TEST(LayerMemoriesTest, SearchSeesDocumentsWithTags) {
  ScratchDir dir;
  auto m = OpenStore(dir.File("memories.db"));
  ASSERT_NE(m, nullptr);
  MemoryInfo info;
  ASSERT_TRUE(m->Create("mem", 0, &info).ok());
  std::mt19937 rng(3);
  std::vector<NewMemoryDocument> docs;
  std::vector<int64_t> ids;
  for (int64_t n : {9, 4, 13}) {
    docs.push_back(MakeDoc(rng, n, "doc " + std::to_string(docs.size())));
    MemoryDocument out;
    int64_t evicted = -1;
    ASSERT_TRUE(m->AddDocument(info.id, docs.back(), &out, &evicted).ok());
    EXPECT_EQ(evicted, 0);
    ids.push_back(out.id);
  }
  // Stored pairs read back as given.
  for (size_t j = 0; j < docs.size(); ++j) {
    std::vector<int32_t> tokens;
    std::vector<float> keys, values;
    ASSERT_TRUE(m->GetDocumentPairs(ids[j], &tokens, &keys, &values).ok());
    EXPECT_EQ(tokens, docs[j].tokens);
    EXPECT_TRUE(SameBits(keys, docs[j].keys));
    EXPECT_TRUE(SameBits(values, docs[j].values));
  }

  std::unique_ptr<KvMemory> reader;
  ASSERT_TRUE(m->Reader(info.id, &reader).ok());
  EXPECT_EQ(reader->lanes(), 1);
  EXPECT_EQ(reader->heads(), kHeads);
  EXPECT_EQ(reader->head_dim(), kDim);
  EXPECT_EQ(reader->size(0), 26);

  // Every stored token, as a query: head h's query t is doc j's key at position p for head h.
  struct Ref { size_t doc; int64_t pos; };
  std::vector<Ref> refs;
  for (size_t j = 0; j < docs.size(); ++j) {
    for (int64_t p = 0; p < static_cast<int64_t>(docs[j].tokens.size()); ++p) refs.push_back({j, p});
  }
  const int64_t n = static_cast<int64_t>(refs.size()), k = 3;
  std::vector<float> queries(static_cast<size_t>(kHeads * n * kDim));
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t t = 0; t < n; ++t) {
      const NewMemoryDocument& d = docs[refs[t].doc];
      const int64_t dn = static_cast<int64_t>(d.tokens.size());
      std::copy_n(d.keys.begin() + (h * dn + refs[t].pos) * kDim, kDim, queries.begin() + (h * n + t) * kDim);
    }
  }
  const Hits hits = SearchAll(*reader, queries, n, k);
  int mismatches = 0;
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t t = 0; t < n; ++t) {
      const NewMemoryDocument& d = docs[refs[t].doc];
      const int64_t dn = static_cast<int64_t>(d.tokens.size());
      const int64_t slot = (h * n + t) * k;  // best hit
      const int64_t tag = hits.tags[slot];
      EXPECT_EQ(TagDocument(tag), ids[refs[t].doc]) << "head " << h << " query " << t;
      EXPECT_EQ(TagPosition(tag), refs[t].pos) << "head " << h << " query " << t;
      EXPECT_EQ(tag, DocumentTag(ids[refs[t].doc], refs[t].pos));
      const float* want_key = d.keys.data() + (h * dn + refs[t].pos) * kDim;
      const float* want_value = d.values.data() + (h * dn + refs[t].pos) * kDim;
      mismatches += std::memcmp(hits.keys.data() + slot * kDim, want_key, kDim * sizeof(float)) != 0;
      mismatches += std::memcmp(hits.values.data() + slot * kDim, want_value, kDim * sizeof(float)) != 0;
      // The other hits are real tokens too (26 tokens held, k = 3).
      for (int64_t r = 1; r < k; ++r) EXPECT_GE(hits.tags[slot + r], 0);
    }
  }
  EXPECT_EQ(mismatches, 0);

  // A search for more than it holds: the missing slots are zero pairs with tag -1.
  const int64_t big = 30;
  const Hits all = SearchAll(*reader, RandomQueries(rng, 1), 1, big);
  for (int64_t h = 0; h < kHeads; ++h) {
    for (int64_t r = 0; r < big; ++r) {
      if (r < 26) {
        EXPECT_GE(all.tags[h * big + r], 0);
      } else {
        EXPECT_EQ(all.tags[h * big + r], -1);
        for (int64_t j = 0; j < kDim; ++j) EXPECT_EQ(all.keys[(h * big + r) * kDim + j], 0.0f);
      }
    }
  }

  // CountHeldKeys sees every key of head 0.
  int64_t held = -1;
  const int64_t n1 = static_cast<int64_t>(docs[1].tokens.size());
  ASSERT_TRUE(m->CountHeldKeys(info.id, docs[1].keys.data(), n1, &held).ok());
  EXPECT_EQ(held, n1);

  // Read-only.
  const NewMemoryDocument extra = MakeDoc(rng, 2, "extra");
  const std::vector<int64_t> tags = {DocumentTag(99, 0), DocumentTag(99, 1)};
  Status s = reader->Append(0, extra.keys.data(), extra.values.data(), tags.data(), 2);
  EXPECT_EQ(s.code(), Status::Code::kFailedPrecondition) << s.ToString();
  reader->Clear(0);  // a no-op on a served memory
  EXPECT_EQ(reader->size(0), 26);
}

// 4. Open rebuilds every ring from the database: searches answer exactly as before.
TEST(LayerMemoriesTest, ReopenRebuildsRings) {
  ScratchDir dir;
  const std::string path = dir.File("memories.db");
  auto m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  MemoryInfo unbounded, fifo;
  ASSERT_TRUE(m->Create("unbounded", 0, &unbounded).ok());
  ASSERT_TRUE(m->Create("fifo", 50, &fifo).ok());
  std::mt19937 rng(4);
  for (int64_t n : {30, 25, 40, 7}) {
    MemoryDocument out;
    ASSERT_TRUE(m->AddDocument(unbounded.id, MakeDoc(rng, n, "u" + std::to_string(n), "{\"n\": 1}"), &out, nullptr).ok());
    ASSERT_TRUE(m->AddDocument(fifo.id, MakeDoc(rng, n, "f" + std::to_string(n)), &out, nullptr).ok());
  }
  // A deletion before closing too (the FIFO ring is rebuilt, the unbounded one edited in place).
  std::vector<MemoryDocument> udocs = AllDocuments(*m, unbounded.id);
  std::vector<MemoryDocument> fdocs = AllDocuments(*m, fifo.id);
  ASSERT_EQ(udocs.size(), 4u);
  ASSERT_EQ(fdocs.size(), 4u);
  ASSERT_TRUE(m->DeleteDocument(unbounded.id, udocs[1].id, nullptr).ok());
  ASSERT_TRUE(m->DeleteDocument(fifo.id, fdocs[3].id, nullptr).ok());

  const int64_t n = 64, k = 4;
  const std::vector<float> queries = RandomQueries(rng, n);
  std::vector<MemoryInfo> list_before;
  ASSERT_TRUE(m->List(&list_before).ok());
  std::map<int64_t, Hits> before;
  std::map<int64_t, std::vector<MemoryDocument>> docs_before;
  std::map<int64_t, int64_t> size_before;
  for (int64_t id : {unbounded.id, fifo.id}) {
    std::unique_ptr<KvMemory> reader;
    ASSERT_TRUE(m->Reader(id, &reader).ok());
    before[id] = SearchAll(*reader, queries, n, k);
    size_before[id] = reader->size(0);
    docs_before[id] = AllDocuments(*m, id);
  }
  EXPECT_EQ(size_before[unbounded.id], 30 + 40 + 7);
  EXPECT_EQ(size_before[fifo.id], 50);

  m.reset();
  m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  std::vector<MemoryInfo> list_after;
  ASSERT_TRUE(m->List(&list_after).ok());
  ASSERT_EQ(list_after.size(), list_before.size());
  for (size_t i = 0; i < list_after.size(); ++i) {
    EXPECT_EQ(list_after[i].id, list_before[i].id);
    EXPECT_EQ(list_after[i].name, list_before[i].name);
    EXPECT_EQ(list_after[i].capacity, list_before[i].capacity);
    EXPECT_EQ(list_after[i].created_at_ms, list_before[i].created_at_ms);
    EXPECT_EQ(list_after[i].documents, list_before[i].documents);
    EXPECT_EQ(list_after[i].stored_tokens, list_before[i].stored_tokens);
    EXPECT_EQ(list_after[i].resident_tokens, list_before[i].resident_tokens);
  }
  for (int64_t id : {unbounded.id, fifo.id}) {
    SCOPED_TRACE("memory " + std::to_string(id));
    std::unique_ptr<KvMemory> reader;
    ASSERT_TRUE(m->Reader(id, &reader).ok());
    EXPECT_EQ(reader->size(0), size_before[id]);
    const Hits after = SearchAll(*reader, queries, n, k);
    EXPECT_EQ(after.tags, before[id].tags);
    EXPECT_TRUE(SameBits(after.keys, before[id].keys));
    EXPECT_TRUE(SameBits(after.values, before[id].values));
    const std::vector<MemoryDocument> docs = AllDocuments(*m, id);
    ASSERT_EQ(docs.size(), docs_before[id].size());
    for (size_t i = 0; i < docs.size(); ++i) {
      EXPECT_EQ(docs[i].id, docs_before[id][i].id);
      EXPECT_EQ(docs[i].tokens, docs_before[id][i].tokens);
      EXPECT_EQ(docs[i].resident_tokens, docs_before[id][i].resident_tokens);
      EXPECT_EQ(docs[i].metadata_json, docs_before[id][i].metadata_json);
      EXPECT_EQ(docs[i].created_at_ms, docs_before[id][i].created_at_ms);
    }
  }
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");

  // Another shape is refused.
  m.reset();
  LayerMemoriesOptions wrong = Options();
  wrong.head_dim = kDim * 2;
  std::unique_ptr<LayerMemories> w;
  EXPECT_TRUE(LayerMemories::Open(path, wrong, &w).IsInvalidArgument());
}

// 5. Deleting a document leaves the memory as one that never read it.
struct Store {
  ScratchDir dir;
  std::unique_ptr<LayerMemories> m;
  int64_t memory_id = 0;
  std::map<int64_t, int64_t> index_of;  // document id -> index in the test's document list
  std::map<int64_t, int64_t> id_of;     // index -> document id
};

void ExpectSameAsNeverRead(const Store& live, const Store& ref, const std::vector<float>& queries, int64_t n,
                           int64_t tokens_left) {
  std::unique_ptr<KvMemory> a, b;
  ASSERT_TRUE(live.m->Reader(live.memory_id, &a).ok());
  ASSERT_TRUE(ref.m->Reader(ref.memory_id, &b).ok());
  EXPECT_EQ(a->size(0), b->size(0));
  for (int64_t k : {int64_t{8}, b->size(0) + 5}) {
    SCOPED_TRACE("k " + std::to_string(k));
    const Hits ha = SearchAll(*a, queries, n, k), hb = SearchAll(*b, queries, n, k);
    EXPECT_EQ(CanonicalTags(ha.tags, live.index_of), CanonicalTags(hb.tags, ref.index_of));
    EXPECT_TRUE(SameBits(ha.keys, hb.keys));
    EXPECT_TRUE(SameBits(ha.values, hb.values));
  }
  MemoryInfo ia, ib;
  ASSERT_TRUE(live.m->Get(live.memory_id, &ia).ok());
  ASSERT_TRUE(ref.m->Get(ref.memory_id, &ib).ok());
  EXPECT_EQ(ia.documents, ib.documents);
  EXPECT_EQ(ia.stored_tokens, tokens_left);
  EXPECT_EQ(ib.stored_tokens, tokens_left);
  EXPECT_EQ(ia.resident_tokens, ib.resident_tokens);
  const std::vector<MemoryDocument> da = AllDocuments(*live.m, live.memory_id);
  const std::vector<MemoryDocument> db = AllDocuments(*ref.m, ref.memory_id);
  ASSERT_EQ(da.size(), db.size());
  for (size_t i = 0; i < da.size(); ++i) {
    EXPECT_EQ(live.index_of.at(da[i].id), ref.index_of.at(db[i].id));
    EXPECT_EQ(da[i].tokens, db[i].tokens);
    EXPECT_EQ(da[i].resident_tokens, db[i].resident_tokens) << "document index " << live.index_of.at(da[i].id);
    MemoryDocument ga;
    ASSERT_TRUE(live.m->GetDocument(live.memory_id, da[i].id, false, &ga).ok());
    EXPECT_EQ(ga.resident_tokens, db[i].resident_tokens);
  }
}

void RunDeleteEqualsNeverRead(int64_t capacity, int64_t deleted_index) {
  SCOPED_TRACE("capacity " + std::to_string(capacity) + ", deleting document " + std::to_string(deleted_index));
  std::mt19937 rng(static_cast<uint32_t>(500 + capacity + deleted_index));
  std::vector<NewMemoryDocument> docs;
  for (int64_t n : {30, 25, 40}) docs.push_back(MakeDoc(rng, n, "doc of " + std::to_string(n)));
  int64_t tokens_left = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (static_cast<int64_t>(i) != deleted_index) tokens_left += static_cast<int64_t>(docs[i].tokens.size());
  }

  Store live, ref;
  const std::string live_path = live.dir.File("memories.db");
  live.m = OpenStore(live_path);
  ref.m = OpenStore(ref.dir.File("memories.db"));
  ASSERT_NE(live.m, nullptr);
  ASSERT_NE(ref.m, nullptr);
  MemoryInfo info;
  // A first memory in the reference store shifts its ids, so that ids really differ.
  ASSERT_TRUE(ref.m->Create("padding", 0, &info).ok());
  const int64_t padding_id = info.id;
  ASSERT_TRUE(live.m->Create("mem", capacity, &info).ok());
  live.memory_id = info.id;
  ASSERT_TRUE(ref.m->Create("mem", capacity, &info).ok());
  ref.memory_id = info.id;
  MemoryDocument pad;
  ASSERT_TRUE(ref.m->AddDocument(padding_id, MakeDoc(rng, 3, "pad"), &pad, nullptr).ok());
  for (size_t i = 0; i < docs.size(); ++i) {
    MemoryDocument out;
    ASSERT_TRUE(live.m->AddDocument(live.memory_id, docs[i], &out, nullptr).ok());
    live.index_of[out.id] = static_cast<int64_t>(i);
    live.id_of[static_cast<int64_t>(i)] = out.id;
    if (static_cast<int64_t>(i) == deleted_index) continue;
    ASSERT_TRUE(ref.m->AddDocument(ref.memory_id, docs[i], &out, nullptr).ok());
    ref.index_of[out.id] = static_cast<int64_t>(i);
  }
  const int64_t victim = live.id_of[deleted_index];
  LayerMemories::Traces traces;
  ASSERT_TRUE(live.m->FindTraces(live.memory_id, victim, &traces).ok());
  EXPECT_FALSE(traces.tombstone);
  EXPECT_TRUE(traces.row);
  EXPECT_TRUE(traces.ring_matches_rebuild);

  MemoryDocument deleted;
  ASSERT_TRUE(live.m->DeleteDocument(live.memory_id, victim, &deleted).ok());
  EXPECT_EQ(deleted.id, victim);
  EXPECT_EQ(deleted.memory_id, live.memory_id);
  EXPECT_EQ(deleted.tokens, static_cast<int64_t>(docs[deleted_index].tokens.size()));
  EXPECT_TRUE(live.m->DeleteDocument(live.memory_id, victim, nullptr).IsNotFound());
  MemoryDocument gone;
  EXPECT_TRUE(live.m->GetDocument(live.memory_id, victim, true, &gone).IsNotFound());
  std::vector<int32_t> tokens;
  std::vector<float> keys, values;
  EXPECT_TRUE(live.m->GetDocumentPairs(victim, &tokens, &keys, &values).IsNotFound());
  MemoryDocumentTombstone tomb;
  ASSERT_TRUE(live.m->GetTombstone(victim, &tomb).ok());
  EXPECT_EQ(tomb.document_id, victim);
  EXPECT_EQ(tomb.memory_id, live.memory_id);
  EXPECT_EQ(tomb.tokens, deleted.tokens);
  EXPECT_TRUE(live.m->GetTombstone(live.id_of[(deleted_index + 1) % 3], &tomb).IsNotFound());

  const int64_t n = 96;
  const std::vector<float> queries = RandomQueries(rng, n);
  {
    SCOPED_TRACE("after delete");
    ExpectSameAsNeverRead(live, ref, queries, n, tokens_left);
  }
  // No key of the deleted document is held, whether it had been evicted or not.
  int64_t held = -1;
  ASSERT_TRUE(live.m->CountHeldKeys(live.memory_id, docs[deleted_index].keys.data(), deleted.tokens, &held).ok());
  EXPECT_EQ(held, 0);
  traces = LayerMemories::Traces();
  ASSERT_TRUE(live.m->FindTraces(live.memory_id, victim, &traces).ok());
  EXPECT_TRUE(traces.tombstone);
  EXPECT_FALSE(traces.row);
  EXPECT_EQ(traces.ring_tokens, 0);
  EXPECT_TRUE(traces.ring_matches_rebuild);
  std::string problems = "unset";
  ASSERT_TRUE(live.m->Check(&problems).ok());
  EXPECT_EQ(problems, "");

  // The same after reopening.
  live.m.reset();
  live.m = OpenStore(live_path);
  ASSERT_NE(live.m, nullptr);
  {
    SCOPED_TRACE("after reopen");
    ExpectSameAsNeverRead(live, ref, queries, n, tokens_left);
  }
  traces = LayerMemories::Traces();
  ASSERT_TRUE(live.m->FindTraces(live.memory_id, victim, &traces).ok());
  EXPECT_TRUE(traces.tombstone);
  EXPECT_FALSE(traces.row);
  EXPECT_EQ(traces.ring_tokens, 0);
  EXPECT_TRUE(traces.ring_matches_rebuild);

  // Reading on after the delete: both stores read one more document and still agree.
  const NewMemoryDocument more = MakeDoc(rng, 20, "more");
  MemoryDocument out;
  ASSERT_TRUE(live.m->AddDocument(live.memory_id, more, &out, nullptr).ok());
  live.index_of[out.id] = 3;
  ASSERT_TRUE(ref.m->AddDocument(ref.memory_id, more, &out, nullptr).ok());
  ref.index_of[out.id] = 3;
  {
    SCOPED_TRACE("after reading on");
    ExpectSameAsNeverRead(live, ref, queries, n, tokens_left + 20);
  }
}

TEST(LayerMemoriesTest, DeleteEqualsNeverReadUnbounded) {
  for (int64_t victim : {0, 1, 2}) RunDeleteEqualsNeverRead(0, victim);
}

TEST(LayerMemoriesTest, DeleteEqualsNeverReadFifo) {
  for (int64_t victim : {0, 1, 2}) RunDeleteEqualsNeverRead(50, victim);
}

// FIFO capacities around the documents' sizes: smaller than every document (each one alone overflows the
// ring) and between the totals.
TEST(LayerMemoriesTest, DeleteEqualsNeverReadFifoOtherCapacities) {
  for (int64_t capacity : {20, 60}) {
    for (int64_t victim : {0, 1, 2}) RunDeleteEqualsNeverRead(capacity, victim);
  }
}

// The ring as a FIFO memory that read everything but the deleted document holds it, by hand: deleting
// the last document of 30, 25, 40 with capacity 50 brings back the first document's positions 5..29.
TEST(LayerMemoriesTest, FifoDeleteBringsBackOlderTokens) {
  ScratchDir dir;
  auto m = OpenStore(dir.File("memories.db"));
  ASSERT_NE(m, nullptr);
  MemoryInfo info;
  ASSERT_TRUE(m->Create("fifo", 50, &info).ok());
  std::mt19937 rng(6);
  std::vector<int64_t> ids;
  for (int64_t n : {30, 25, 40}) {
    MemoryDocument out;
    ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, n, "d"), &out, nullptr).ok());
    ids.push_back(out.id);
  }
  std::unique_ptr<KvMemory> reader;
  ASSERT_TRUE(m->Reader(info.id, &reader).ok());
  auto resident_tags = [&]() {
    const Hits h = SearchAll(*reader, RandomQueries(rng, 1), 1, 60);
    std::map<int64_t, std::vector<int64_t>> by_doc;  // head 0's hits
    for (int64_t r = 0; r < 60; ++r) {
      if (h.tags[r] >= 0) by_doc[TagDocument(h.tags[r])].push_back(TagPosition(h.tags[r]));
    }
    for (auto& [id, v] : by_doc) std::sort(v.begin(), v.end());
    return by_doc;
  };
  auto positions = [](int64_t from, int64_t to) {
    std::vector<int64_t> v;
    for (int64_t p = from; p < to; ++p) v.push_back(p);
    return v;
  };
  auto held = resident_tags();
  EXPECT_EQ(held.size(), 2u);
  EXPECT_EQ(held[ids[1]], positions(15, 25));
  EXPECT_EQ(held[ids[2]], positions(0, 40));
  ASSERT_TRUE(m->DeleteDocument(info.id, ids[2], nullptr).ok());
  held = resident_tags();
  EXPECT_EQ(held.size(), 2u);
  EXPECT_EQ(held[ids[0]], positions(5, 30));
  EXPECT_EQ(held[ids[1]], positions(0, 25));
  EXPECT_EQ(reader->size(0), 50);
}

// 6. FIFO eviction: *evicted and the resident counts of documents and memory.
TEST(LayerMemoriesTest, FifoEvictionAndResidentCounts) {
  ScratchDir dir;
  const std::string path = dir.File("memories.db");
  auto m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  MemoryInfo fifo, unbounded;
  ASSERT_TRUE(m->Create("fifo", 50, &fifo).ok());
  ASSERT_TRUE(m->Create("unbounded", 0, &unbounded).ok());
  std::mt19937 rng(7);
  struct Step { int64_t n, evicted, resident; std::vector<int64_t> residents; };
  // Capacity 50: 30 (30 held), 25 (5 of the first leave), 40 (35 more of the first, 5 of the second),
  // 60 (more than the ring: the 50 held leave, and its own first 10).
  const std::vector<Step> steps = {
      {30, 0, 30, {30}},
      {25, 5, 25, {25, 25}},
      {40, 40, 40, {0, 10, 40}},
      {60, 60, 50, {0, 0, 0, 50}},
      {8, 8, 8, {0, 0, 0, 42, 8}},
  };
  std::vector<int64_t> ids;
  int64_t stored = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    SCOPED_TRACE("step " + std::to_string(i));
    const Step& st = steps[i];
    const NewMemoryDocument doc = MakeDoc(rng, st.n, "step " + std::to_string(i));
    MemoryDocument out;
    int64_t evicted = -1;
    ASSERT_TRUE(m->AddDocument(fifo.id, doc, &out, &evicted).ok());
    EXPECT_EQ(evicted, st.evicted);
    EXPECT_EQ(out.tokens, st.n);
    EXPECT_EQ(out.resident_tokens, st.resident);
    EXPECT_EQ(out.memory_id, fifo.id);
    ids.push_back(out.id);
    stored += st.n;
    const std::vector<MemoryDocument> docs = AllDocuments(*m, fifo.id);
    ASSERT_EQ(docs.size(), i + 1);
    for (size_t j = 0; j <= i; ++j) {
      EXPECT_EQ(docs[j].id, ids[j]);
      EXPECT_EQ(docs[j].resident_tokens, st.residents[j]) << "document " << j;
      MemoryDocument got;
      ASSERT_TRUE(m->GetDocument(fifo.id, ids[j], false, &got).ok());
      EXPECT_EQ(got.resident_tokens, st.residents[j]) << "document " << j;
    }
    MemoryInfo info;
    ASSERT_TRUE(m->Get(fifo.id, &info).ok());
    EXPECT_EQ(info.documents, static_cast<int64_t>(i + 1));
    EXPECT_EQ(info.stored_tokens, stored);
    EXPECT_EQ(info.resident_tokens, std::min<int64_t>(stored, 50));

    // The unbounded memory evicts nothing.
    ASSERT_TRUE(m->AddDocument(unbounded.id, doc, &out, &evicted).ok());
    EXPECT_EQ(evicted, 0);
    EXPECT_EQ(out.resident_tokens, st.n);
    ASSERT_TRUE(m->Get(unbounded.id, &info).ok());
    EXPECT_EQ(info.resident_tokens, stored);
  }
  // Rebuilt on open: the same residents.
  m.reset();
  m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  const std::vector<MemoryDocument> docs = AllDocuments(*m, fifo.id);
  ASSERT_EQ(docs.size(), steps.size());
  for (size_t j = 0; j < docs.size(); ++j) EXPECT_EQ(docs[j].resident_tokens, steps.back().residents[j]);
  std::vector<MemoryInfo> list;
  ASSERT_TRUE(m->List(&list).ok());
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].resident_tokens, 50);
  EXPECT_EQ(list[0].stored_tokens, stored);
  EXPECT_EQ(list[1].resident_tokens, stored);
  // Reading on after the reopen counts evictions from the rebuilt ring.
  MemoryDocument out;
  int64_t evicted = -1;
  ASSERT_TRUE(m->AddDocument(fifo.id, MakeDoc(rng, 5, "after"), &out, &evicted).ok());
  EXPECT_EQ(evicted, 5);
  EXPECT_EQ(out.resident_tokens, 5);
}

// 7. A Reader taken before its memory is deleted then holds nothing.
TEST(LayerMemoriesTest, DeletedMemoryReaderHoldsNothing) {
  ScratchDir dir;
  auto m = OpenStore(dir.File("memories.db"));
  ASSERT_NE(m, nullptr);
  MemoryInfo info, other;
  ASSERT_TRUE(m->Create("doomed", 0, &info).ok());
  ASSERT_TRUE(m->Create("other", 0, &other).ok());
  std::mt19937 rng(8);
  std::vector<int64_t> ids;
  std::vector<NewMemoryDocument> docs;
  for (int64_t n : {12, 9}) {
    docs.push_back(MakeDoc(rng, n, "doomed doc"));
    MemoryDocument out;
    ASSERT_TRUE(m->AddDocument(info.id, docs.back(), &out, nullptr).ok());
    ids.push_back(out.id);
  }
  MemoryDocument out;
  ASSERT_TRUE(m->AddDocument(other.id, MakeDoc(rng, 6, "kept"), &out, nullptr).ok());
  std::unique_ptr<KvMemory> reader, other_reader;
  ASSERT_TRUE(m->Reader(info.id, &reader).ok());
  ASSERT_TRUE(m->Reader(other.id, &other_reader).ok());
  const int64_t n = 5, k = 4;
  const std::vector<float> queries = RandomQueries(rng, n);
  const Hits before = SearchAll(*reader, queries, n, k);
  for (int64_t t : before.tags) EXPECT_GE(t, 0);
  EXPECT_EQ(reader->size(0), 21);

  int64_t deleted_docs = -1;
  ASSERT_TRUE(m->Delete(info.id, &deleted_docs).ok());
  EXPECT_EQ(deleted_docs, 2);
  EXPECT_EQ(reader->size(0), 0);
  const Hits after = SearchAll(*reader, queries, n, k);
  for (int64_t t : after.tags) EXPECT_EQ(t, -1);
  for (float x : after.keys) EXPECT_EQ(x, 0.0f);
  for (float x : after.values) EXPECT_EQ(x, 0.0f);
  // Without tags too.
  std::vector<float> keys(after.keys.size(), 5.0f), values(after.values.size(), 5.0f);
  ASSERT_TRUE(reader->Search(0, queries.data(), n, k, keys.data(), values.data(), nullptr).ok());
  for (float x : keys) EXPECT_EQ(x, 0.0f);
  EXPECT_FALSE(reader->Search(1, queries.data(), n, k, keys.data(), values.data(), nullptr).ok());

  // The rest of the API agrees; the other memory is untouched.
  int64_t held = -1;
  ASSERT_TRUE(m->CountHeldKeys(info.id, docs[0].keys.data(), 12, &held).ok());
  EXPECT_EQ(held, 0);
  MemoryDocument got;
  EXPECT_TRUE(m->GetDocument(info.id, ids[0], false, &got).IsNotFound());
  EXPECT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 3, "late"), &got, nullptr).IsNotFound());
  std::vector<MemoryDocument> page;
  int64_t next = 0;
  EXPECT_TRUE(m->ListDocuments(info.id, 0, 10, &page, &next).IsNotFound());
  for (int64_t id : ids) {
    LayerMemories::Traces traces;
    ASSERT_TRUE(m->FindTraces(info.id, id, &traces).ok());
    EXPECT_TRUE(traces.tombstone);
    EXPECT_FALSE(traces.row);
    EXPECT_EQ(traces.ring_tokens, 0);
    EXPECT_TRUE(traces.ring_matches_rebuild);
    MemoryDocumentTombstone tomb;
    ASSERT_TRUE(m->GetTombstone(id, &tomb).ok());
    EXPECT_EQ(tomb.memory_id, info.id);
  }
  EXPECT_EQ(other_reader->size(0), 6);
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
}

// 8. Deleted content leaves no bytes in the files: the text and the raw key bytes, for a deleted
// document and for the documents of a deleted memory.
void RunNoTrace(bool delete_memory) {
  SCOPED_TRACE(delete_memory ? "deleting the memory" : "deleting the document");
  ScratchDir dir;
  const std::string path = dir.File("memories.db");
  auto m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  MemoryInfo victim_memory, kept_memory;
  ASSERT_TRUE(m->Create("victim memory named ibex-canary-7719", 0, &victim_memory).ok());
  ASSERT_TRUE(m->Create("kept memory", 0, &kept_memory).ok());
  std::mt19937 rng(9);
  for (int i = 0; i < 10; ++i) {
    MemoryDocument out;
    ASSERT_TRUE(m->AddDocument(i % 2 ? victim_memory.id : kept_memory.id,
                               MakeDoc(rng, 20, "ordinary memory text number " + std::to_string(i)), &out, nullptr)
                    .ok());
  }
  const std::string marker = "okapi-canary-5531";
  NewMemoryDocument secret = MakeDoc(rng, 24, "The secret is " + marker + ", keep it.", "{\"tag\": \"" + marker + "\"}");
  // Head 0's first two tokens' keys: a known sequence, so their bytes identify the document.
  for (int i = 0; i < 16; ++i) secret.keys[i] = 1234.5f + 0.25f * static_cast<float>(i * i);
  const std::string key_window = FloatBytes(secret.keys.data(), 16);
  const std::string value_window = FloatBytes(secret.values.data() + kHeads * 24 * kDim - 16, 16);
  MemoryDocument secret_doc;
  ASSERT_TRUE(m->AddDocument(victim_memory.id, secret, &secret_doc, nullptr).ok());
  MemoryDocument after;
  const NewMemoryDocument kept = MakeDoc(rng, 20, "ordinary memory text after");
  ASSERT_TRUE(m->AddDocument(kept_memory.id, kept, &after, nullptr).ok());
  const std::string kept_window = FloatBytes(kept.keys.data(), 16);

  // The scan finds them before the delete (otherwise the test below proves nothing).
  ASSERT_NE(FilesContaining(dir.path(), marker), "");
  ASSERT_NE(FilesContaining(dir.path(), key_window), "");
  ASSERT_NE(FilesContaining(dir.path(), value_window), "");
  ASSERT_NE(FilesContaining(dir.path(), "ibex-canary-7719"), "");

  if (delete_memory) {
    int64_t docs = -1;
    ASSERT_TRUE(m->Delete(victim_memory.id, &docs).ok());
    EXPECT_EQ(docs, 6);
  } else {
    ASSERT_TRUE(m->DeleteDocument(victim_memory.id, secret_doc.id, nullptr).ok());
  }
  EXPECT_EQ(FilesContaining(dir.path(), marker), "");
  EXPECT_EQ(FilesContaining(dir.path(), key_window), "");
  EXPECT_EQ(FilesContaining(dir.path(), value_window), "");
  // The other documents are still there (the scan looks at the right bytes).
  EXPECT_NE(FilesContaining(dir.path(), "ordinary memory text after"), "");
  EXPECT_NE(FilesContaining(dir.path(), kept_window), "");
  if (delete_memory) {
    EXPECT_EQ(FilesContaining(dir.path(), "ibex-canary-7719"), "");  // the memory's name too
    EXPECT_EQ(FilesContaining(dir.path(), "ordinary memory text number 1"), "");
    EXPECT_NE(FilesContaining(dir.path(), "ordinary memory text number 2"), "");
  } else {
    EXPECT_NE(FilesContaining(dir.path(), "ordinary memory text number 1"), "");
  }

  // Still clean after close and reopen.
  m.reset();
  m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(FilesContaining(dir.path(), marker), "");
  EXPECT_EQ(FilesContaining(dir.path(), key_window), "");
  EXPECT_EQ(FilesContaining(dir.path(), value_window), "");
  EXPECT_NE(FilesContaining(dir.path(), kept_window), "");
}

TEST(LayerMemoriesTest, NoTraceInFilesAfterDeleteDocument) { RunNoTrace(/*delete_memory=*/false); }

TEST(LayerMemoriesTest, NoTraceInFilesAfterDeleteMemory) { RunNoTrace(/*delete_memory=*/true); }

// 9. A healthy store checks clean (with wrapped FIFO rings, deletions and a deleted memory).
TEST(LayerMemoriesTest, CheckReportsNoProblems) {
  ScratchDir dir;
  const std::string path = dir.File("memories.db");
  auto m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
  MemoryInfo a, b, c;
  ASSERT_TRUE(m->Create("a", 0, &a).ok());
  ASSERT_TRUE(m->Create("b", 37, &b).ok());
  ASSERT_TRUE(m->Create("c", 10, &c).ok());
  std::mt19937 rng(10);
  std::vector<int64_t> bids;
  for (int i = 0; i < 8; ++i) {
    MemoryDocument out;
    const int64_t n = 3 + static_cast<int64_t>(rng() % 20);
    ASSERT_TRUE(m->AddDocument(a.id, MakeDoc(rng, n, "a"), &out, nullptr).ok());
    ASSERT_TRUE(m->AddDocument(b.id, MakeDoc(rng, n, "b"), &out, nullptr).ok());
    bids.push_back(out.id);
    ASSERT_TRUE(m->AddDocument(c.id, MakeDoc(rng, n, "c"), &out, nullptr).ok());
  }
  ASSERT_TRUE(m->DeleteDocument(b.id, bids[6], nullptr).ok());
  ASSERT_TRUE(m->DeleteDocument(b.id, bids[2], nullptr).ok());
  ASSERT_TRUE(m->Delete(c.id, nullptr).ok());
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
  // Every served ring equals its rebuild, search for search.
  for (int64_t id : {a.id, b.id}) {
    std::unique_ptr<KvMemory> served, rebuilt;
    ASSERT_TRUE(m->Reader(id, &served).ok());
    ASSERT_TRUE(m->RebuiltReader(id, &rebuilt).ok());
    EXPECT_EQ(served->size(0), rebuilt->size(0));
    const std::vector<float> q = RandomQueries(rng, 16);
    const Hits hs = SearchAll(*served, q, 16, 6), hr = SearchAll(*rebuilt, q, 16, 6);
    EXPECT_EQ(hs.tags, hr.tags);
    EXPECT_TRUE(SameBits(hs.keys, hr.keys));
  }
  m.reset();
  m = OpenStore(path);
  ASSERT_NE(m, nullptr);
  problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
}

// 10. ListDocuments pages in id order.
TEST(LayerMemoriesTest, ListDocumentsPaging) {
  ScratchDir dir;
  auto m = OpenStore(dir.File("memories.db"));
  ASSERT_NE(m, nullptr);
  MemoryInfo info, other;
  ASSERT_TRUE(m->Create("mem", 0, &info).ok());
  ASSERT_TRUE(m->Create("other", 0, &other).ok());
  std::mt19937 rng(11);
  std::vector<int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    MemoryDocument out;
    ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 2 + i, "doc " + std::to_string(i), "{\"i\": " + std::to_string(i) + "}"),
                               &out, nullptr)
                    .ok());
    ids.push_back(out.id);
    // Interleaved documents of another memory are not listed.
    ASSERT_TRUE(m->AddDocument(other.id, MakeDoc(rng, 2, "other"), &out, nullptr).ok());
  }
  std::vector<MemoryDocument> page;
  int64_t next = -1;
  ASSERT_TRUE(m->ListDocuments(info.id, 0, 2, &page, &next).ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, ids[0]);
  EXPECT_EQ(page[1].id, ids[1]);
  EXPECT_EQ(page[0].tokens, 2);
  EXPECT_EQ(page[0].resident_tokens, 2);
  EXPECT_EQ(page[1].metadata_json, "{\"i\": 1}");
  EXPECT_EQ(page[0].text, "");
  EXPECT_EQ(next, ids[1]);
  ASSERT_TRUE(m->ListDocuments(info.id, next, 2, &page, &next).ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, ids[2]);
  EXPECT_EQ(page[1].id, ids[3]);
  EXPECT_EQ(next, ids[3]);
  ASSERT_TRUE(m->ListDocuments(info.id, next, 2, &page, &next).ok());
  ASSERT_EQ(page.size(), 1u);
  EXPECT_EQ(page[0].id, ids[4]);
  EXPECT_EQ(page[0].tokens, 6);
  EXPECT_EQ(next, 0);
  // An exact fit ends with next 0 too.
  ASSERT_TRUE(m->ListDocuments(info.id, 0, 5, &page, &next).ok());
  EXPECT_EQ(page.size(), 5u);
  EXPECT_EQ(next, 0);
  // Past the end: empty.
  ASSERT_TRUE(m->ListDocuments(info.id, ids[4], 2, &page, &next).ok());
  EXPECT_TRUE(page.empty());
  EXPECT_EQ(next, 0);
  // A deleted document leaves the listing.
  ASSERT_TRUE(m->DeleteDocument(info.id, ids[1], nullptr).ok());
  ASSERT_TRUE(m->ListDocuments(info.id, 0, 2, &page, &next).ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].id, ids[0]);
  EXPECT_EQ(page[1].id, ids[2]);
  EXPECT_EQ(next, ids[2]);

  EXPECT_TRUE(m->ListDocuments(info.id, 0, 0, &page, &next).IsInvalidArgument());
  EXPECT_TRUE(m->ListDocuments(info.id, 0, -3, &page, &next).IsInvalidArgument());
  EXPECT_TRUE(m->ListDocuments(info.id, 0, 10001, &page, &next).IsInvalidArgument());
  EXPECT_TRUE(m->ListDocuments(info.id + 100, 0, 2, &page, &next).IsNotFound());
}

// Thread-safety: searches run while documents are added and deleted; once DeleteDocument has returned,
// no later search sees the document (FIFO: ring rebuilt and swapped; unbounded: removed in place).
TEST(LayerMemoriesTest, SearchesDuringWritesNeverSeeDeletedDocuments) {
  ScratchDir dir;
  auto m = OpenStore(dir.File("memories.db"));
  ASSERT_NE(m, nullptr);
  MemoryInfo fifo, unbounded;
  ASSERT_TRUE(m->Create("fifo", 60, &fifo).ok());
  ASSERT_TRUE(m->Create("unbounded", 0, &unbounded).ok());
  std::mutex deleted_mu;
  std::set<int64_t> deleted;  // documents whose DeleteDocument has returned
  std::atomic<bool> done{false};
  std::atomic<int64_t> searches{0}, violations{0}, errors{0};
  std::vector<std::thread> searchers;
  for (int t = 0; t < 3; ++t) {
    const int64_t id = t % 2 ? unbounded.id : fifo.id;
    std::unique_ptr<KvMemory> reader;
    ASSERT_TRUE(m->Reader(id, &reader).ok());
    searchers.emplace_back([&, t, reader = std::shared_ptr<KvMemory>(std::move(reader))]() {
      std::mt19937 qrng(static_cast<uint32_t>(100 + t));
      const int64_t n = 4, k = 16;
      while (!done.load()) {
        std::set<int64_t> gone;
        {
          std::lock_guard<std::mutex> lock(deleted_mu);
          gone = deleted;
        }
        const std::vector<float> q = RandomQueries(qrng, n);
        std::vector<float> keys(static_cast<size_t>(kHeads * n * k * kDim)), values(keys.size());
        std::vector<int64_t> tags(static_cast<size_t>(kHeads * n * k));
        if (!reader->Search(0, q.data(), n, k, keys.data(), values.data(), tags.data()).ok()) ++errors;
        for (int64_t tag : tags) violations += tag >= 0 && gone.count(TagDocument(tag)) > 0;
        ++searches;
      }
    });
  }
  std::mt19937 rng(12);
  std::vector<int64_t> live_fifo, live_unbounded;
  for (int i = 0; i < 24; ++i) {
    MemoryDocument out;
    const int64_t n = 5 + static_cast<int64_t>(rng() % 20);
    ASSERT_TRUE(m->AddDocument(fifo.id, MakeDoc(rng, n, "f"), &out, nullptr).ok());
    live_fifo.push_back(out.id);
    ASSERT_TRUE(m->AddDocument(unbounded.id, MakeDoc(rng, n, "u"), &out, nullptr).ok());
    live_unbounded.push_back(out.id);
    if (i % 2 == 1) {
      for (auto* live : {&live_fifo, &live_unbounded}) {
        const size_t victim = rng() % live->size();
        const int64_t doc = (*live)[victim];
        live->erase(live->begin() + static_cast<std::ptrdiff_t>(victim));
        ASSERT_TRUE(m->DeleteDocument(live == &live_fifo ? fifo.id : unbounded.id, doc, nullptr).ok());
        std::lock_guard<std::mutex> lock(deleted_mu);
        deleted.insert(doc);
      }
    }
  }
  // Let the searchers run a little after the last delete.
  const int64_t seen = searches.load();
  while (searches.load() < seen + 30) std::this_thread::yield();
  done = true;
  for (std::thread& t : searchers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(violations.load(), 0);
  EXPECT_GT(searches.load(), 30);
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
}

// Ring snapshots: a clean close saves large rings, the next open restores them (and they answer as the
// rebuilt ring); a write makes a snapshot stale, a delete removes it before returning, and a stale, torn or
// orphaned snapshot is ignored and removed at open.
LayerMemoriesOptions SnapshotOptions() {
  LayerMemoriesOptions o = Options();
  o.snapshot_from = 1;
  return o;
}

std::vector<std::string> RingFiles(const ScratchDir& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir.File("memory-rings"), ec)) {
    out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(LayerMemoriesSnapshotTest, ACleanCloseSavesRingsAndOpenRestoresThem) {
  ScratchDir dir;
  std::mt19937 rng(31);
  const std::vector<float> q = RandomQueries(rng, 7);
  Hits fifo_hits, unbounded_hits;
  int64_t fifo_id = 0, unbounded_id = 0;
  {
    auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
    MemoryInfo fifo, unbounded;
    ASSERT_TRUE(m->Create("fifo", 50, &fifo).ok());
    ASSERT_TRUE(m->Create("all", 0, &unbounded).ok());
    fifo_id = fifo.id, unbounded_id = unbounded.id;
    for (int i = 0; i < 4; ++i) {
      MemoryDocument d;
      ASSERT_TRUE(m->AddDocument(fifo.id, MakeDoc(rng, 20, "f" + std::to_string(i)), &d, nullptr).ok());
      ASSERT_TRUE(m->AddDocument(unbounded.id, MakeDoc(rng, 20, "u" + std::to_string(i)), &d, nullptr).ok());
    }
    EXPECT_EQ(m->rings_from_snapshots(), 0);
    EXPECT_TRUE(RingFiles(dir).empty());  // written at close, not per write
    std::unique_ptr<KvMemory> r;
    ASSERT_TRUE(m->Reader(fifo.id, &r).ok());
    fifo_hits = SearchAll(*r, q, 7, 5);
    ASSERT_TRUE(m->Reader(unbounded.id, &r).ok());
    unbounded_hits = SearchAll(*r, q, 7, 5);
  }
  EXPECT_EQ(RingFiles(dir), (std::vector<std::string>{std::to_string(fifo_id) + ".ring",
                                                      std::to_string(unbounded_id) + ".ring"}));
  auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
  EXPECT_EQ(m->rings_from_snapshots(), 2);
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());  // every ring equals a rebuild from the database
  EXPECT_EQ(problems, "");
  std::unique_ptr<KvMemory> r;
  ASSERT_TRUE(m->Reader(fifo_id, &r).ok());
  Hits h = SearchAll(*r, q, 7, 5);
  EXPECT_EQ(h.tags, fifo_hits.tags);
  EXPECT_TRUE(SameBits(h.keys, fifo_hits.keys));
  EXPECT_TRUE(SameBits(h.values, fifo_hits.values));
  ASSERT_TRUE(m->Reader(unbounded_id, &r).ok());
  EXPECT_EQ(SearchAll(*r, q, 7, 5).tags, unbounded_hits.tags);
  // A restored FIFO ring goes on evicting as the saved one would have.
  MemoryDocument d;
  int64_t evicted = 0;
  ASSERT_TRUE(m->AddDocument(fifo_id, MakeDoc(rng, 20, "f4"), &d, &evicted).ok());
  EXPECT_EQ(evicted, 20);
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
}

TEST(LayerMemoriesSnapshotTest, DeletesRemoveTheSnapshotAndStaleOnesAreNeverUsed) {
  ScratchDir dir;
  std::mt19937 rng(32);
  int64_t id = 0, doomed = 0, other = 0;
  NewMemoryDocument secret = MakeDoc(rng, 16, "the secret document");
  {
    auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
    MemoryInfo info, gone;
    ASSERT_TRUE(m->Create("m", 0, &info).ok());
    ASSERT_TRUE(m->Create("gone", 0, &gone).ok());
    id = info.id, other = gone.id;
    MemoryDocument d;
    ASSERT_TRUE(m->AddDocument(id, MakeDoc(rng, 16, "keep"), &d, nullptr).ok());
    ASSERT_TRUE(m->AddDocument(id, secret, &d, nullptr).ok());
    doomed = d.id;
    ASSERT_TRUE(m->AddDocument(other, MakeDoc(rng, 16, "other"), &d, nullptr).ok());
  }
  const std::string snapshot = dir.File("memory-rings/" + std::to_string(id) + ".ring");
  std::string old_snapshot;
  ASSERT_TRUE(ReadFileToString(snapshot, &old_snapshot).ok());
  ASSERT_NE(old_snapshot.find(FloatBytes(secret.keys.data(), 8)), std::string::npos);  // it holds the keys
  {
    auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
    EXPECT_EQ(m->rings_from_snapshots(), 2);
    ASSERT_TRUE(m->DeleteDocument(id, doomed, nullptr).ok());
    EXPECT_FALSE(std::filesystem::exists(snapshot));  // gone before the delete returned
    ASSERT_TRUE(m->Delete(other, nullptr).ok());
    EXPECT_TRUE(RingFiles(dir).empty());
  }
  // The close saved the changed ring again, without the document.
  std::string now;
  ASSERT_TRUE(ReadFileToString(snapshot, &now).ok());
  EXPECT_EQ(now.find(FloatBytes(secret.keys.data(), 8)), std::string::npos);
  // A snapshot from before the delete (as a crash between the commit and the unlink would leave) is stale:
  // open rebuilds from the database and removes it; so is a torn one, and one of a deleted memory.
  testing::WriteFileOrDie(snapshot, old_snapshot);
  testing::WriteFileOrDie(dir.File("memory-rings/" + std::to_string(other) + ".ring"), old_snapshot);
  {
    auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
    EXPECT_EQ(m->rings_from_snapshots(), 0);
    EXPECT_FALSE(std::filesystem::exists(dir.File("memory-rings/" + std::to_string(other) + ".ring")));
    int64_t held = 0;
    ASSERT_TRUE(m->CountHeldKeys(id, secret.keys.data(), 16, &held).ok());
    EXPECT_EQ(held, 0);
    std::string problems = "unset";
    ASSERT_TRUE(m->Check(&problems).ok());
    EXPECT_EQ(problems, "");
  }
  ASSERT_TRUE(ReadFileToString(snapshot, &now).ok());  // rewritten from the rebuild at open
  EXPECT_EQ(now.find(FloatBytes(secret.keys.data(), 8)), std::string::npos);
  testing::WriteFileOrDie(snapshot, now.substr(0, now.size() - 5));  // torn
  {
    auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
    EXPECT_EQ(m->rings_from_snapshots(), 0);
    EXPECT_EQ(AllDocuments(*m, id).size(), 1u);
  }
  // Other centroids (another memory index) make it stale too.
  LayerMemoriesOptions ivf = SnapshotOptions();
  ivf.lists = 2;
  ivf.centroids.assign(static_cast<size_t>(kHeads * 2 * kDim), 0.5f);
  auto m = OpenStore(dir.File("memories.db"), ivf);
  EXPECT_EQ(m->rings_from_snapshots(), 0);
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
}

TEST(LayerMemoriesSnapshotTest, ASnapshotOfAnotherDatabaseIsNeverUsed) {
  // Two databases whose memory 1 has the same ids, counts and shape but other pairs (a replaced or
  // restored database): the snapshot of one must not be restored into the other.
  ScratchDir a, b;
  std::mt19937 rng(34);
  for (ScratchDir* dir : {&a, &b}) {
    auto m = OpenStore(dir->File("memories.db"), SnapshotOptions());
    MemoryInfo info;
    ASSERT_TRUE(m->Create("m", 0, &info).ok());
    MemoryDocument d;
    ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 12, "one"), &d, nullptr).ok());
    ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 12, "two"), &d, nullptr).ok());
  }
  std::string snapshot;
  ASSERT_TRUE(ReadFileToString(a.File("memory-rings/1.ring"), &snapshot).ok());
  testing::WriteFileOrDie(b.File("memory-rings/1.ring"), snapshot);
  auto m = OpenStore(b.File("memories.db"), SnapshotOptions());
  EXPECT_EQ(m->rings_from_snapshots(), 0);
  std::string problems = "unset";
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
}

TEST(LayerMemoriesSnapshotTest, ACheckingOpenLeavesSnapshotsAlone) {
  ScratchDir dir;
  std::mt19937 rng(35);
  {
    auto m = OpenStore(dir.File("memories.db"), SnapshotOptions());
    MemoryInfo info;
    ASSERT_TRUE(m->Create("m", 0, &info).ok());
    MemoryDocument d;
    ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 12, "one"), &d, nullptr).ok());
  }
  testing::WriteFileOrDie(dir.File("memory-rings/1.ring"), "torn");
  testing::WriteFileOrDie(dir.File("memory-rings/9.ring"), "orphan");
  LayerMemoriesOptions o = SnapshotOptions();
  o.keep_snapshots = false;
  {
    auto m = OpenStore(dir.File("memories.db"), o);
    EXPECT_EQ(m->rings_from_snapshots(), 0);
    MemoryDocument d;
    ASSERT_TRUE(m->AddDocument(1, MakeDoc(rng, 12, "two"), &d, nullptr).ok());
  }
  EXPECT_EQ(RingFiles(dir), (std::vector<std::string>{"1.ring", "9.ring"}));
  std::string bytes;
  ASSERT_TRUE(ReadFileToString(dir.File("memory-rings/1.ring"), &bytes).ok());
  EXPECT_EQ(bytes, "torn");
}

TEST(LayerMemoriesSnapshotTest, SmallRingsAreNotSnapshotted) {
  ScratchDir dir;
  std::mt19937 rng(33);
  {
    auto m = OpenStore(dir.File("memories.db"));  // snapshot_from 16,384
    MemoryInfo info;
    ASSERT_TRUE(m->Create("m", 0, &info).ok());
    MemoryDocument d;
    ASSERT_TRUE(m->AddDocument(info.id, MakeDoc(rng, 30, "small"), &d, nullptr).ok());
  }
  EXPECT_TRUE(RingFiles(dir).empty());
}

}  // namespace
}  // namespace mnemo
