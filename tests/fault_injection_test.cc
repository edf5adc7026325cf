// Fault injection in the storage layer (util/fault_injection_fs.h): every write path outside SQLite runs
// once per file-system operation with that operation failing (EIO, a short write, or a disk that stays
// full), then the process "crashes" and the power fails, dropping what was not fsynced. After each run:
// the caller got an error or an acknowledgement, nothing acknowledged is lost, nothing deleted comes back
// (no file holds it), and the state opens clean. SQLite's own failures (disk full, I/O error, busy) are
// injected through a VFS shim and must reach the caller as clear errors that change nothing.
#include <sqlite3.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <set>

#include "api/server_impl.h"
#include "eval/audit.h"
#include "lm/checkpoint.h"
#include "memory/datastore.h"
#include "memory/fact_store.h"
#include "memory/layer_memories.h"
#include "memory/state_dir.h"
#include "tests/fact_store_fixture.h"
#include "tests/layer_memories_crash_doc.h"
#include "tests/lm_fixture.h"
#include "tests/test_util.h"
#include "util/fault_injection_fs.h"
#include "util/file_util.h"

namespace mnemo {
namespace {

using Fault = FaultInjectionFileSystem::Fault;
using testing::ScratchDir;

std::string Read(const std::string& path) {
  std::string s;
  return ReadFileToString(path, &s).ok() ? s : "<absent>";
}

// ---------------------------------------------------------------------------------------------------
// The fault-injecting file system itself.

TEST(FaultInjectionFsTest, PowerLossKeepsOnlyWhatWasSynced) {
  ScratchDir dir;
  FaultInjectionFileSystem fs;
  ScopedFileSystem use(&fs);
  const std::string a = dir.File("a"), b = dir.File("b"), c = dir.File("c");
  ASSERT_TRUE(WriteFileAtomically(a, "old").ok());
  fs.ForgetUnsynced();
  // Synced data in a synced directory entry survives; the unsynced tail does not.
  std::unique_ptr<WritableFile> f;
  ASSERT_TRUE(fs.NewWritableFile(b, &f).ok());
  ASSERT_TRUE(f->Append("kept").ok());
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(f->Append(" lost").ok());
  ASSERT_TRUE(f->Close().ok());
  ASSERT_TRUE(fs.SyncDirectory(dir.path()).ok());
  // A synced file whose directory was not synced afterwards vanishes.
  ASSERT_TRUE(fs.NewWritableFile(c, &f).ok());
  ASSERT_TRUE(f->Append("unnamed").ok());
  ASSERT_TRUE(f->Sync().ok());
  ASSERT_TRUE(f->Close().ok());
  // A rename over `a` without a directory sync is undone, bringing the old content back.
  ASSERT_TRUE(fs.Rename(c, a).ok());
  EXPECT_EQ(Read(a), "unnamed");
  ASSERT_TRUE(fs.PowerLoss().ok());
  EXPECT_EQ(Read(a), "old");
  EXPECT_EQ(Read(b), "kept");
  EXPECT_EQ(Read(c), "<absent>");
}

TEST(FaultInjectionFsTest, AtomicWritesLeaveOldOrNewContentUnderEveryFault) {
  for (const Fault fault : {Fault::kIOError, Fault::kShortWrite, Fault::kNoSpace}) {
    for (int64_t n = 1;; ++n) {
      ScratchDir dir;
      const std::string path = dir.File("file");
      ASSERT_TRUE(WriteFileAtomically(path, "old content").ok());
      FaultInjectionFileSystem fs;
      ScopedFileSystem use(&fs);
      fs.SetPlan({FaultInjectionFileSystem::kAll, n, fault, /*sticky=*/false});
      const Status s = WriteFileAtomically(path, "new content, longer than the old");
      const bool injected = fs.injected() > 0;
      EXPECT_EQ(s.ok(), !injected) << n << ": " << s.ToString();
      if (!s.ok()) {
        EXPECT_TRUE(s.IsIOError());
        EXPECT_NE(s.ToString().find("injected fault"), std::string::npos) << s.ToString();
        // A failed write changes nothing and leaves no temporary behind (before the directory sync).
        if (s.ToString().find(dir.path() + ":") == std::string::npos) {
          EXPECT_EQ(Read(path), "old content") << n;
        }
        size_t files = 0;
        for (const auto& e : std::filesystem::directory_iterator(dir.path())) files += e.path() != path;
        EXPECT_EQ(files, 0u) << n;
      }
      ASSERT_TRUE(fs.PowerLoss().ok());
      const std::string after = Read(path);
      if (s.ok()) {
        EXPECT_EQ(after, "new content, longer than the old") << n;
      } else {
        EXPECT_TRUE(after == "old content" || after == "new content, longer than the old") << n << ": " << after;
      }
      if (!injected) break;
      ASSERT_LT(n, 20);
    }
  }
}

TEST(FaultInjectionFsTest, FailedDirectorySyncIsAnError) {
  ScratchDir dir;
  FaultInjectionFileSystem fs;
  ScopedFileSystem use(&fs);
  fs.SetPlan({FaultInjectionFileSystem::kSyncDir, 1, Fault::kIOError, false});
  EXPECT_TRUE(WriteFileAtomically(dir.File("x"), "x").IsIOError());
  fs.SetPlan({FaultInjectionFileSystem::kSyncDir, 1, Fault::kIOError, false});
  EXPECT_TRUE(RemoveFileDurably(dir.File("x")).IsIOError());
  fs.SetPlan({FaultInjectionFileSystem::kSyncDir, 1, Fault::kIOError, false});
  EXPECT_TRUE(EnsureDirectory(dir.File("d/e")).IsIOError());
  // A directory created without its parent synced is gone after a power loss, with its content.
  fs.SetPlan({});
  ASSERT_TRUE(fs.CreateDir(dir.File("f")).ok());
  ASSERT_TRUE(WriteFileAtomically(dir.File("f/g"), "g").ok());
  ASSERT_TRUE(fs.PowerLoss().ok());
  EXPECT_FALSE(FileExists(dir.File("f")));
}

// ---------------------------------------------------------------------------------------------------
// The driver: one run per fault point.

struct FaultRun {
  Fault fault;
  bool sticky;  // the disk stays full from the fault on
};

const FaultRun kRuns[] = {{Fault::kIOError, false}, {Fault::kShortWrite, false}, {Fault::kNoSpace, true}};

std::string RunName(const FaultRun& r) {
  return r.fault == Fault::kIOError ? "EIO" : r.fault == Fault::kShortWrite ? "short write" : "disk full";
}

// For n = 1, 2, ...: `setup` (no faults) in a fresh directory, then `work` with the n-th file-system
// operation failing; `work` must call fs.Crash() before destroying what it opened (their shutdown writes
// then fail, as after a real crash). Then the power fails, and `check` runs on what is left, with the real
// file system. Stops at the first n past the last operation. Returns how many fault points ran.
int64_t EveryFaultPoint(const FaultRun& run, const std::function<void(const std::string&)>& setup,
                        const std::function<void(const std::string&, FaultInjectionFileSystem&)>& work,
                        const std::function<void(const std::string&)>& check) {
  const bool failed_before = ::testing::Test::HasFailure();
  for (int64_t n = 1;; ++n) {
    SCOPED_TRACE(RunName(run) + " at operation " + std::to_string(n));
    ScratchDir dir;
    setup(dir.path());
    if (::testing::Test::HasFatalFailure()) return n;
    bool injected = false;
    {
      FaultInjectionFileSystem fs;
      ScopedFileSystem use(&fs);
      fs.SetPlan({FaultInjectionFileSystem::kAll, n, run.fault, run.sticky});
      work(dir.path(), fs);
      injected = fs.injected() > 0;
      EXPECT_TRUE(fs.PowerLoss().ok());
    }
    check(dir.path());
    if (::testing::Test::HasFailure() && !failed_before) return n;
    if (!injected) return n - 1;
    if (n > 2000) {
      ADD_FAILURE() << "more than 2000 operations";
      return n;
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Fact store: snapshot chunks (writes, rewrites after deletes, removals).

struct FactLedger {
  std::vector<NewFact> facts;            // by id - 1
  std::set<int64_t> live;                // acknowledged and not deleted (or a delete that failed)
  std::set<int64_t> deleted;             // deletes that committed
};

FactStoreOptions SmallChunks() {
  FactStoreOptions o;
  o.snapshot_every = 2;
  o.snapshot_chunk_facts = 4;
  return o;
}

void AddFacts(FactStore* store, FactLedger* ledger, int n) {
  std::vector<NewFact> batch;
  for (int i = 0; i < n; ++i) {
    batch.push_back(testing::SyntheticFact("fact " + std::to_string(ledger->facts.size() + batch.size())));
  }
  std::vector<int64_t> ids;
  const Status s = store->Add(batch, &ids);
  if (!s.ok()) return;  // SQLite is not faulted here: an Add commits or fails before its commit
  for (size_t i = 0; i < ids.size(); ++i) {
    ledger->facts.resize(std::max<size_t>(ledger->facts.size(), static_cast<size_t>(ids[i])));
    ledger->facts[ids[i] - 1] = batch[i];
    ledger->live.insert(ids[i]);
  }
}

void DeleteFacts(FactStore* store, FactLedger* ledger, const std::vector<int64_t>& ids) {
  std::vector<FactRecord> deleted;
  (void)store->Delete(ids, &deleted);  // records come back exactly when the delete committed
  for (const FactRecord& r : deleted) {
    ledger->live.erase(r.id);
    ledger->deleted.insert(r.id);
  }
}

TEST(FaultInjectionTest, FactStoreSnapshotsLoseNothingAndResurrectNothing) {
  for (const FaultRun& run : kRuns) {
    FactLedger ledger;
    const int64_t points = EveryFaultPoint(
        run,
        [&](const std::string& dir) {
          ledger = FactLedger();
          ASSERT_TRUE(testing::MakeState(dir + "/state", dir + "/base", 64, "Flat").ok());
          std::unique_ptr<FactStore> store;
          ASSERT_TRUE(FactStore::Open(dir + "/state", SmallChunks(), &store).ok());
          AddFacts(store.get(), &ledger, 10);
          ASSERT_EQ(ledger.live.size(), 10u);
          ASSERT_TRUE(store->Close().ok());
        },
        [&](const std::string& dir, FaultInjectionFileSystem& fs) {
          std::unique_ptr<FactStore> store;
          if (FactStore::Open(dir + "/state", SmallChunks(), &store).ok()) {
            AddFacts(store.get(), &ledger, 3);
            DeleteFacts(store.get(), &ledger, {2, 6});  // in chunks written at setup
            (void)store->Checkpoint();
            AddFacts(store.get(), &ledger, 2);
            DeleteFacts(store.get(), &ledger, {11, 9});
            AddFacts(store.get(), &ledger, 1);
            (void)store->Close();  // a clean shutdown, then a restart under the same faults
            store.reset();
            if (FactStore::Open(dir + "/state", SmallChunks(), &store).ok()) {
              DeleteFacts(store.get(), &ledger, {3, 14});
              AddFacts(store.get(), &ledger, 2);
            }
          }
          fs.Crash();
        },
        [&](const std::string& dir) {
          std::unique_ptr<FactStore> store;
          // First as fsck sees the disk, before an open removes stale files: no file holds a deleted fact.
          FactStoreOptions check = SmallChunks();
          check.read_only_check = true;
          Status s = FactStore::Open(dir + "/state", check, &store);
          ASSERT_TRUE(s.ok()) << s.ToString();
          for (int64_t id : ledger.deleted) {
            FactTraces t;
            ASSERT_TRUE(store->FindTraces(id, nullptr, &t).ok());
            EXPECT_EQ(t.snapshots_holding, 0) << "a snapshot file holds deleted fact " << id;
          }
          store.reset();
          s = FactStore::Open(dir + "/state", SmallChunks(), &store);
          ASSERT_TRUE(s.ok()) << s.ToString();
          for (int64_t id : ledger.live) {
            FactRecord r;
            EXPECT_TRUE(store->Get(id, false, &r).ok()) << "acknowledged fact " << id << " lost";
          }
          for (int64_t id : ledger.deleted) {
            FactTraces t;
            ASSERT_TRUE(store->FindTraces(id, nullptr, &t).ok());
            EXPECT_FALSE(t.in_database || t.in_segment || t.snapshots_holding > 0)
                << "deleted fact " << id << " came back: database " << t.in_database << ", segment "
                << t.in_segment << ", snapshot files " << t.snapshots_holding;
          }
          // The segment answers exactly as one rebuilt from the database.
          std::unique_ptr<KnnMemory> rebuilt;
          ASSERT_TRUE(store->RebuildFromDatabase(&rebuilt).ok());
          std::vector<float> q;
          for (int64_t id : ledger.live) {
            const std::vector<float> k = testing::FactKey(ledger.facts[id - 1], 0);
            q.insert(q.end(), k.begin(), k.end());
          }
          MemorySearchOptions o;
          o.k = 8;
          std::vector<Neighbor> a, b;
          ASSERT_TRUE(store->Search(q.data(), static_cast<int64_t>(ledger.live.size()), o, &a).ok());
          ASSERT_TRUE(rebuilt->Search(q.data(), static_cast<int64_t>(ledger.live.size()), o, &b).ok());
          ASSERT_EQ(a.size(), b.size());
          for (size_t i = 0; i < a.size(); ++i) ASSERT_EQ(a[i].entry, b[i].entry) << i;
        });
    EXPECT_GT(points, 30) << RunName(run);
    std::printf("fact store, %s: %lld fault points\n", RunName(run).c_str(), static_cast<long long>(points));
  }
}

// ---------------------------------------------------------------------------------------------------
// Datastores: the build (keys, values, index, documents, manifest) and document deletion (index, hole
// punching, documents.jsonl, manifest).

constexpr int kDocs = 6, kDocTokens = 5;

// Document d's entries: keys derived from (d, t), values d * 10 + t.
void DocEntry(int d, int t, std::vector<float>* key, int32_t* value) {
  std::mt19937 rng(static_cast<uint32_t>(d * 100 + t));
  std::normal_distribution<float> normal;
  key->resize(testing::kFactDim);
  for (float& x : *key) x = HalfToFloat(FloatToHalf(normal(rng)));
  *value = d * 10 + t;
}

Status BuildDocumentDatastore(const std::string& dir) {
  std::unique_ptr<DatastoreWriter> w;
  MNEMO_RETURN_IF_ERROR(DatastoreWriter::Create(dir, testing::kFactDim, &w));
  for (int d = 0; d < kDocs; ++d) {
    MNEMO_RETURN_IF_ERROR(w->BeginDocument("d" + std::to_string(d), kDocTokens + 1, "{\"d\":" + std::to_string(d) + "}", false));
    for (int t = 0; t < kDocTokens; ++t) {
      std::vector<float> key;
      int32_t value;
      DocEntry(d, t, &key, &value);
      MNEMO_RETURN_IF_ERROR(w->Append(1, key.data(), &value));
    }
  }
  DatastoreManifest m;
  m.model_fingerprint = testing::kFactModel;
  m.key_layer = "test";
  m.source = "documents";
  DatastoreFinishOptions finish;
  finish.progress = false;
  return w->Finish(m, finish);
}

// Every live document's entries are found at distance 0 with their values; deleted ones leave no trace.
void CheckDatastore(const std::string& dir, const std::set<int>& must_be_deleted, const std::set<int>& must_live) {
  DatastoreOpenOptions o;
  o.verify_checksums = true;
  std::unique_ptr<Datastore> ds;
  const Status s = Datastore::Open(dir, o, &ds);
  ASSERT_TRUE(s.ok()) << s.ToString();
  for (int d = 0; d < kDocs; ++d) {
    const std::string id = "d" + std::to_string(d);
    DatastoreDocument doc;
    ASSERT_TRUE(ds->GetDocument(id, &doc).ok());
    if (must_be_deleted.count(d)) {
      EXPECT_TRUE(doc.deleted()) << id << " came back";
    }
    if (must_live.count(d)) {
      EXPECT_FALSE(doc.deleted()) << id << " deleted without a delete";
    }
    if (doc.deleted()) {
      DocumentTraces t;
      ASSERT_TRUE(ds->FindDocumentTraces(id, &t).ok());
      EXPECT_TRUE(t.clean()) << id << ": index entries " << t.index_entries << ", key bytes " << t.nonzero_key_bytes
                             << ", stray files " << t.stray_files.size();
      continue;
    }
    for (int t = 0; t < kDocTokens; ++t) {
      std::vector<float> key;
      int32_t value;
      DocEntry(d, t, &key, &value);
      MemorySearchOptions so;
      so.k = 1;
      std::vector<Neighbor> out;
      ASSERT_TRUE(ds->Search(key.data(), 1, so, &out).ok());
      ASSERT_EQ(out.size(), 1u);
      EXPECT_EQ(out[0].token, value) << id << " entry " << t;
      EXPECT_EQ(out[0].distance, 0.0f) << id << " entry " << t;
    }
  }
}

TEST(FaultInjectionTest, DatastoreBuildIsAllOrNothing) {
  for (const FaultRun& run : kRuns) {
    bool acked = false;
    const int64_t points = EveryFaultPoint(
        run, [&](const std::string&) { acked = false; },
        [&](const std::string& dir, FaultInjectionFileSystem& fs) {
          acked = BuildDocumentDatastore(dir + "/ds").ok();
          fs.Crash();
        },
        [&](const std::string& dir) {
          std::unique_ptr<Datastore> ds;
          const Status s = Datastore::Open(dir + "/ds", DatastoreOpenOptions(), &ds);
          if (acked) {
            ASSERT_TRUE(s.ok()) << s.ToString();
          }
          if (s.ok()) {
            ds.reset();
            CheckDatastore(dir + "/ds", {}, {0, 1, 2, 3, 4, 5});  // what opens is whole
          } else {
            EXPECT_FALSE(s.ToString().empty());
          }
        });
    EXPECT_GT(points, 10) << RunName(run);
    std::printf("datastore build, %s: %lld fault points\n", RunName(run).c_str(), static_cast<long long>(points));
  }
}

TEST(FaultInjectionTest, DatastoreDocumentDeletesNeverComeBack) {
  for (const FaultRun& run : kRuns) {
    std::set<int> acked;
    const int64_t points = EveryFaultPoint(
        run,
        [&](const std::string& dir) {
          acked.clear();
          ASSERT_TRUE(BuildDocumentDatastore(dir + "/ds").ok());
        },
        [&](const std::string& dir, FaultInjectionFileSystem& fs) {
          std::unique_ptr<Datastore> ds;
          if (Datastore::Open(dir + "/ds", DatastoreOpenOptions(), &ds).ok()) {
            DocumentDeleteReport report;
            if (ds->DeleteDocuments({"d1"}, DocumentDeleteOptions(), &report).ok()) acked.insert(1);
            if (ds->DeleteDocuments({"d3", "d4"}, DocumentDeleteOptions(), &report).ok()) acked.insert({3, 4});
          }
          fs.Crash();
        },
        [&](const std::string& dir) { CheckDatastore(dir + "/ds", acked, {0, 2, 5}); });
    EXPECT_GT(points, 10) << RunName(run);
    std::printf("datastore document deletes, %s: %lld fault points\n", RunName(run).c_str(),
                static_cast<long long>(points));
  }
}

// ---------------------------------------------------------------------------------------------------
// Memorizing-layer memories: ring snapshots (written at open and shutdown, removed by deletes).

LayerMemoriesOptions RingOptions() {
  LayerMemoriesOptions o;
  o.heads = testing::kCrashHeads;
  o.head_dim = testing::kCrashHeadDim;
  o.snapshot_from = 1;  // every ring is snapshotted
  return o;
}

// Whether any ring snapshot in `dir` holds two consecutive tokens of `document_id`: their tags, saved as
// adjacent int64s (a 16-byte pattern no other document's tags can form, at any alignment).
bool SnapshotsHoldDocument(const std::string& dir, int64_t document_id) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/memory-rings", ec)) {
    const std::string bytes = Read(e.path().string());
    for (int64_t p = 0; p + 1 < 12; ++p) {  // documents have 3..12 tokens
      const int64_t tags[2] = {DocumentTag(document_id, p), DocumentTag(document_id, p + 1)};
      if (bytes.find(std::string(reinterpret_cast<const char*>(tags), sizeof(tags))) != std::string::npos) return true;
    }
  }
  return false;
}

TEST(FaultInjectionTest, MemoryRingSnapshotsNeverHoldADeletedDocument) {
  for (const FaultRun& run : kRuns) {
    std::set<int64_t> live, deleted;
    int64_t fifo = 0, unbounded = 0, doomed = 0;
    std::vector<int64_t> doomed_docs;
    const int64_t points = EveryFaultPoint(
        run,
        [&](const std::string& dir) {
          live.clear();
          deleted.clear();
          doomed_docs.clear();
          std::unique_ptr<LayerMemories> m;
          ASSERT_TRUE(LayerMemories::Open(dir + "/memories.db", RingOptions(), &m).ok());
          MemoryInfo info;
          ASSERT_TRUE(m->Create("fifo", 40, &info).ok());
          fifo = info.id;
          ASSERT_TRUE(m->Create("unbounded", 0, &info).ok());
          unbounded = info.id;
          ASSERT_TRUE(m->Create("doomed", 0, &info).ok());
          doomed = info.id;
          for (int i = 0; i < 12; ++i) {
            MemoryDocument d;
            int64_t evicted = 0;
            const int64_t memory = i % 3 == 0 ? fifo : i % 3 == 1 ? unbounded : doomed;
            ASSERT_TRUE(m->AddDocument(memory, testing::CrashDoc(i), &d, &evicted).ok());
            if (memory == doomed) {
              doomed_docs.push_back(d.id);
            } else {
              live.insert(d.id);
            }
          }
          // Destroying it writes every ring's snapshot (a clean shutdown).
        },
        [&](const std::string& dir, FaultInjectionFileSystem& fs) {
          std::unique_ptr<LayerMemories> m;
          if (LayerMemories::Open(dir + "/memories.db", RingOptions(), &m).ok()) {
            for (int64_t doc : {int64_t{1}, int64_t{2}}) {  // the first of fifo and of unbounded
              const int64_t memory = doc == 1 ? fifo : unbounded;
              MemoryDocument d;
              if (m->DeleteDocument(memory, doc, &d).ok()) {
                live.erase(doc);
                deleted.insert(doc);
              }
            }
            MemoryDocument d;
            int64_t evicted = 0;
            if (m->AddDocument(unbounded, testing::CrashDoc(100), &d, &evicted).ok()) live.insert(d.id);
            int64_t documents = 0;
            if (m->Delete(doomed, &documents).ok()) deleted.insert(doomed_docs.begin(), doomed_docs.end());
          }
          m.reset();  // a clean shutdown: the changed rings' snapshots are written
          if (LayerMemories::Open(dir + "/memories.db", RingOptions(), &m).ok()) {
            MemoryDocument d;
            if (m->DeleteDocument(unbounded, 5, &d).ok()) {
              live.erase(5);
              deleted.insert(5);
            }
          }
          fs.Crash();
        },
        [&](const std::string& dir) {
          for (int64_t doc : deleted) EXPECT_FALSE(SnapshotsHoldDocument(dir, doc)) << "document " << doc;
          std::unique_ptr<LayerMemories> m;
          const Status s = LayerMemories::Open(dir + "/memories.db", RingOptions(), &m);
          ASSERT_TRUE(s.ok()) << s.ToString();
          std::string problems;
          ASSERT_TRUE(m->Check(&problems).ok());
          EXPECT_EQ(problems, "");
          for (int64_t doc : live) {
            bool found = false;
            for (int64_t memory : {fifo, unbounded}) {
              MemoryDocument d;
              found = found || m->GetDocument(memory, doc, false, &d).ok();
            }
            EXPECT_TRUE(found) << "acknowledged document " << doc << " lost";
          }
          for (int64_t doc : deleted) {
            for (int64_t memory : {fifo, unbounded, doomed}) {
              LayerMemories::Traces t;
              if (!m->FindTraces(memory, doc, &t).ok()) continue;  // a deleted memory
              EXPECT_FALSE(t.row || t.ring_tokens > 0) << "document " << doc << " came back";
            }
          }
        });
    EXPECT_GT(points, 10) << RunName(run);
    std::printf("memory ring snapshots, %s: %lld fault points\n", RunName(run).c_str(), static_cast<long long>(points));
  }
}

// ---------------------------------------------------------------------------------------------------
// Single-file writes: state.json, audit reports, model checkpoints. Each is the old file, the new one
// whole, or absent (for a first write): never a torn file, and always the new one once acknowledged.

TEST(FaultInjectionTest, StateConfigReportsAndCheckpointsAreNeverTorn) {
  StateConfig config;
  config.model_path = "/models/m";
  config.model_fingerprint = "fp";
  config.dim = 16;
  nlohmann::ordered_json report = {{"format", "mnemo-audit"}, {"exposure", {{"canaries", 4}}}};
  Gpt net = testing::TinyGpt(64, 3);
  for (const FaultRun& run : kRuns) {
    bool state_acked = false, report_acked = false, weights_acked = false;
    const int64_t points = EveryFaultPoint(
        run,
        [&](const std::string&) { state_acked = report_acked = weights_acked = false; },
        [&](const std::string& dir, FaultInjectionFileSystem& fs) {
          state_acked = CreateStateDir(dir + "/state", config).ok();
          report_acked = WriteAuditReport(dir + "/audit", report).ok();
          weights_acked = SaveCheckpoint(dir + "/model", net, nullptr).ok();
          fs.Crash();
        },
        [&](const std::string& dir) {
          StateConfig read;
          const Status s = ReadStateConfig(dir + "/state", &read);
          if (state_acked) {
            ASSERT_TRUE(s.ok()) << s.ToString();
          }
          if (s.ok()) {
            EXPECT_EQ(read.model_fingerprint, "fp");
          } else {
            EXPECT_TRUE(s.IsNotFound()) << s.ToString();
          }
          const std::string json = Read(dir + "/audit/report.json");
          if (report_acked) {
            EXPECT_NE(json, "<absent>");
          }
          if (json != "<absent>") {
            EXPECT_EQ(nlohmann::ordered_json::parse(json), report);
          }
          if (report_acked) {
            EXPECT_NE(Read(dir + "/audit/report.html"), "<absent>");
          }
          Gpt loaded = testing::TinyGpt(64, 9);
          const Status w = LoadWeights(dir + "/model/model.safetensors", loaded);
          if (weights_acked) {
            ASSERT_TRUE(w.ok()) << w.ToString();
          }
          if (w.ok()) {
            EXPECT_EQ(ModelFingerprint(loaded), ModelFingerprint(net));
          } else {
            EXPECT_TRUE(w.IsNotFound() || w.IsIOError()) << w.ToString();
          }
        });
    EXPECT_GT(points, 10) << RunName(run);
    std::printf("state.json + report + checkpoint, %s: %lld fault points\n", RunName(run).c_str(),
                static_cast<long long>(points));
  }
}

// ---------------------------------------------------------------------------------------------------
// SQLite's failures: a VFS over the default one fails writes and syncs with SQLITE_FULL or SQLITE_IOERR
// while armed. Every connection opened while it is registered as the default goes through it.

std::atomic<int> sqlite_fault{SQLITE_OK};

struct ShimFile {
  sqlite3_file base;
  sqlite3_file* real;
};

sqlite3_file* Real(sqlite3_file* f) { return reinterpret_cast<ShimFile*>(f)->real; }

int ShimClose(sqlite3_file* f) { return Real(f)->pMethods->xClose(Real(f)); }
int ShimRead(sqlite3_file* f, void* p, int n, sqlite3_int64 o) { return Real(f)->pMethods->xRead(Real(f), p, n, o); }
int ShimWrite(sqlite3_file* f, const void* p, int n, sqlite3_int64 o) {
  const int fault = sqlite_fault.load();
  if (fault != SQLITE_OK) return fault == SQLITE_IOERR ? SQLITE_IOERR_WRITE : fault;
  return Real(f)->pMethods->xWrite(Real(f), p, n, o);
}
int ShimTruncate(sqlite3_file* f, sqlite3_int64 n) { return Real(f)->pMethods->xTruncate(Real(f), n); }
int ShimSync(sqlite3_file* f, int flags) {
  if (sqlite_fault.load() == SQLITE_IOERR) return SQLITE_IOERR_FSYNC;
  return Real(f)->pMethods->xSync(Real(f), flags);
}
int ShimFileSize(sqlite3_file* f, sqlite3_int64* n) { return Real(f)->pMethods->xFileSize(Real(f), n); }
int ShimLock(sqlite3_file* f, int l) { return Real(f)->pMethods->xLock(Real(f), l); }
int ShimUnlock(sqlite3_file* f, int l) { return Real(f)->pMethods->xUnlock(Real(f), l); }
int ShimCheckReserved(sqlite3_file* f, int* r) { return Real(f)->pMethods->xCheckReservedLock(Real(f), r); }
int ShimFileControl(sqlite3_file* f, int op, void* a) { return Real(f)->pMethods->xFileControl(Real(f), op, a); }
int ShimSectorSize(sqlite3_file* f) { return Real(f)->pMethods->xSectorSize(Real(f)); }
int ShimDeviceCharacteristics(sqlite3_file* f) { return Real(f)->pMethods->xDeviceCharacteristics(Real(f)); }
int ShimShmMap(sqlite3_file* f, int i, int sz, int e, void volatile** p) {
  return Real(f)->pMethods->xShmMap(Real(f), i, sz, e, p);
}
int ShimShmLock(sqlite3_file* f, int o, int n, int fl) { return Real(f)->pMethods->xShmLock(Real(f), o, n, fl); }
void ShimShmBarrier(sqlite3_file* f) { Real(f)->pMethods->xShmBarrier(Real(f)); }
int ShimShmUnmap(sqlite3_file* f, int d) { return Real(f)->pMethods->xShmUnmap(Real(f), d); }
int ShimFetch(sqlite3_file* f, sqlite3_int64 o, int n, void** p) { return Real(f)->pMethods->xFetch(Real(f), o, n, p); }
int ShimUnfetch(sqlite3_file* f, sqlite3_int64 o, void* p) { return Real(f)->pMethods->xUnfetch(Real(f), o, p); }

const sqlite3_io_methods kShimMethods = {
    3,         ShimClose,     ShimRead,        ShimWrite,       ShimTruncate,      ShimSync,
    ShimFileSize, ShimLock,   ShimUnlock,      ShimCheckReserved, ShimFileControl, ShimSectorSize,
    ShimDeviceCharacteristics, ShimShmMap, ShimShmLock, ShimShmBarrier, ShimShmUnmap, ShimFetch, ShimUnfetch};

int ShimOpen(sqlite3_vfs* vfs, const char* name, sqlite3_file* file, int flags, int* out_flags) {
  auto* real_vfs = static_cast<sqlite3_vfs*>(vfs->pAppData);
  auto* shim = reinterpret_cast<ShimFile*>(file);
  shim->real = reinterpret_cast<sqlite3_file*>(shim + 1);
  const int rc = real_vfs->xOpen(real_vfs, name, shim->real, flags, out_flags);
  shim->base.pMethods = shim->real->pMethods != nullptr ? &kShimMethods : nullptr;
  return rc;
}

// Registers the shim as the default VFS for its lifetime.
class FaultySqlite {
 public:
  FaultySqlite() {
    sqlite3_vfs* real = sqlite3_vfs_find(nullptr);
    vfs_ = *real;
    vfs_.zName = "mnemo-faulty";
    vfs_.szOsFile = static_cast<int>(sizeof(ShimFile)) + real->szOsFile;
    vfs_.pAppData = real;
    vfs_.xOpen = ShimOpen;
    real_ = real;
    sqlite3_vfs_register(&vfs_, 1);
  }
  ~FaultySqlite() {
    sqlite_fault = SQLITE_OK;
    sqlite3_vfs_unregister(&vfs_);
    sqlite3_vfs_register(real_, 1);
  }

 private:
  sqlite3_vfs vfs_;
  sqlite3_vfs* real_;
};

TEST(FaultInjectionTest, SqliteFullAndIoErrorsReachTheCallerAndChangeNothing) {
  ScratchDir dir;
  ASSERT_TRUE(testing::MakeState(dir.File("state"), dir.File("base"), 32, "Flat").ok());
  FaultySqlite faulty;
  FactLedger ledger;
  {
    std::unique_ptr<FactStore> store;
    ASSERT_TRUE(FactStore::Open(dir.File("state"), SmallChunks(), &store).ok());
    AddFacts(store.get(), &ledger, 4);
    ASSERT_EQ(ledger.live.size(), 4u);
    for (const int fault : {SQLITE_FULL, SQLITE_IOERR}) {
      const std::string expected = fault == SQLITE_FULL ? "full" : "I/O error";
      sqlite_fault = fault;
      std::vector<int64_t> ids;
      Status s = store->Add({testing::SyntheticFact("refused " + expected)}, &ids);
      EXPECT_TRUE(s.IsIOError()) << s.ToString();
      EXPECT_NE(s.ToString().find(expected), std::string::npos) << s.ToString();
      std::vector<FactRecord> deleted;
      s = store->Delete({1}, &deleted);
      EXPECT_FALSE(s.ok());
      EXPECT_NE(s.ToString().find(expected), std::string::npos) << s.ToString();
      EXPECT_TRUE(deleted.empty());
      sqlite_fault = SQLITE_OK;
      FactRecord r;
      EXPECT_TRUE(store->Get(1, false, &r).ok()) << "a failed delete deleted";
      // The store works again once the disk does.
      AddFacts(store.get(), &ledger, 1);
    }
    EXPECT_EQ(ledger.live.size(), 6u);
  }
  std::unique_ptr<FactStore> store;
  ASSERT_TRUE(FactStore::Open(dir.File("state"), SmallChunks(), &store).ok());
  int64_t count = 0;
  ASSERT_TRUE(store->Count(FactFilter(), &count).ok());
  EXPECT_EQ(count, 6);
  for (int64_t id : ledger.live) {
    FactRecord r;
    EXPECT_TRUE(store->Get(id, false, &r).ok()) << id;
  }
}

TEST(FaultInjectionTest, SqliteBusyIsAClearErrorAfterTheTimeout) {
  ScratchDir dir;
  ASSERT_TRUE(testing::MakeState(dir.File("state"), dir.File("base"), 32, "Flat").ok());
  std::unique_ptr<FactStore> store;
  ASSERT_TRUE(FactStore::Open(dir.File("state"), SmallChunks(), &store).ok());
  // Another process's writer holds the database's write lock past the 5 s busy timeout.
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(FactDbPath(dir.File("state")).c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  std::vector<int64_t> ids;
  const Status s = store->Add({testing::SyntheticFact("waits")}, &ids);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.ToString().find("locked"), std::string::npos) << s.ToString();
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_TRUE(store->Add({testing::SyntheticFact("after")}, &ids).ok());
  int64_t count = 0;
  ASSERT_TRUE(store->Count(FactFilter(), &count).ok());
  EXPECT_EQ(count, 1);
}

// Over HTTP, a full disk is 507 and a database locked past the busy timeout 503 (the request can be
// retried; nothing was acknowledged), other I/O errors 500; each keeps SQLite's or the OS's words.
TEST(FaultInjectionTest, StorageErrorsMapToHttpStatuses) {
  const struct {
    Status status;
    int http;
    const char* type;
  } cases[] = {
      {Status::IOError("facts.db: INSERT INTO facts: database or disk is full"), 507, "insufficient_storage"},
      {Status::IOError("snapshots/chunk-1.idx.tmp.1: write failed: No space left on device"), 507, "insufficient_storage"},
      {Status::IOError("facts.db: BEGIN IMMEDIATE: database is locked"), 503, "unavailable"},
      {Status::IOError("facts.db: COMMIT: disk I/O error"), 500, "server_error"},
  };
  for (const auto& c : cases) {
    const ApiError e = ErrorFromStatus(c.status);
    EXPECT_EQ(e.status, c.http) << c.status.ToString();
    EXPECT_EQ(e.type, c.type) << c.status.ToString();
    EXPECT_NE(e.message.find(c.status.message()), std::string::npos) << e.message;
  }
}

}  // namespace
}  // namespace mnemo
