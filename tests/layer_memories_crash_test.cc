// Crash safety of LayerMemories (memory/layer_memories.h): a child process (layer_memories_crash_child.cc)
// adds and deletes documents of one memory and is killed with SIGKILL at random moments, over and over on
// one database, FIFO and unbounded. After every kill the reopened database must hold every acknowledged
// add bit for bit, no acknowledged delete (its tombstone instead), at most the one change that was in
// flight beyond them, and rings equal to ones rebuilt from the database, holding exactly the expected keys.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "lm/kv_memory.h"
#include "memory/layer_memories.h"
#include "tests/layer_memories_crash_doc.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

using testing::CrashDoc;
using testing::kCrashHeadDim;
using testing::kCrashHeads;

LayerMemoriesOptions CrashOptions() {
  LayerMemoriesOptions o;
  o.heads = kCrashHeads;
  o.head_dim = kCrashHeadDim;
  return o;
}

// Runs the child for about `run_ms` milliseconds after it is ready, kills it, returns its stdout.
std::string RunAndKill(const std::string& db, int64_t capacity, int64_t memory_id, int64_t start, uint64_t seed,
                       int run_ms) {
  int out[2];
  EXPECT_EQ(::pipe(out), 0);
  const std::vector<std::string> args = {MNEMO_MEMORY_CRASH_CHILD, db, std::to_string(capacity),
                                         std::to_string(memory_id), std::to_string(start), std::to_string(seed)};
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    ::execv(MNEMO_MEMORY_CRASH_CHILD, argv.data());
    ::_exit(127);
  }
  ::close(out[1]);
  std::string output;
  char buf[4096];
  // Wait for READY, then let it run.
  while (output.find("READY\n") == std::string::npos) {
    const ssize_t got = ::read(out[0], buf, sizeof(buf));
    if (got <= 0) break;
    output.append(buf, static_cast<size_t>(got));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(run_ms));
  ::kill(pid, SIGKILL);
  for (;;) {
    const ssize_t got = ::read(out[0], buf, sizeof(buf));
    if (got <= 0) break;
    output.append(buf, static_cast<size_t>(got));
  }
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the child stopped on its own before the kill: " << output.substr(0, 500);
  return output;
}

// Head 0's keys of document `index`, [n, head_dim].
std::vector<float> Head0Keys(const NewMemoryDocument& d) {
  const size_t n = d.tokens.size();
  return std::vector<float>(d.keys.begin(), d.keys.begin() + static_cast<std::ptrdiff_t>(n * kCrashHeadDim));
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Model {
  int64_t memory_id = 0;
  std::map<int64_t, int64_t> live;     // document id -> index (CrashDoc)
  std::map<int64_t, int64_t> deleted;  // document id -> index
  int64_t max_id = 0;                  // the largest document id ever seen
};

// Everything the database must say about the model's memory, with `m` freshly opened.
void Verify(LayerMemories* m, const Model& model, int64_t capacity, const std::string& when) {
  SCOPED_TRACE(when);
  MemoryInfo info;
  ASSERT_TRUE(m->Get(model.memory_id, &info).ok());
  ASSERT_EQ(info.capacity, capacity);
  // Every live document is stored, bit for bit.
  int64_t stored_tokens = 0;
  std::vector<float> all_keys;  // head 0, live documents in id order (reading order)
  for (const auto& [id, index] : model.live) {
    const NewMemoryDocument want = CrashDoc(index);
    MemoryDocument d;
    Status g = m->GetDocument(model.memory_id, id, true, &d);
    ASSERT_TRUE(g.ok()) << "acknowledged document " << id << " (index " << index << ") lost: " << g.ToString();
    ASSERT_EQ(d.text, want.text);
    ASSERT_EQ(d.metadata_json, want.metadata_json);
    ASSERT_EQ(d.tokens, static_cast<int64_t>(want.tokens.size()));
    std::vector<int32_t> tokens;
    std::vector<float> keys, values;
    ASSERT_TRUE(m->GetDocumentPairs(id, &tokens, &keys, &values).ok());
    ASSERT_EQ(tokens, want.tokens) << "document " << id;
    ASSERT_TRUE(BitEqual(keys, want.keys)) << "document " << id << ": keys differ";
    ASSERT_TRUE(BitEqual(values, want.values)) << "document " << id << ": values differ";
    stored_tokens += d.tokens;
    const std::vector<float> k0 = Head0Keys(want);
    all_keys.insert(all_keys.end(), k0.begin(), k0.end());
  }
  EXPECT_EQ(info.documents, static_cast<int64_t>(model.live.size()));
  EXPECT_EQ(info.stored_tokens, stored_tokens);
  // Every deleted document is gone, with its tombstone, and not in the ring.
  std::vector<float> deleted_keys;
  int64_t traced = 0;
  for (auto it = model.deleted.rbegin(); it != model.deleted.rend(); ++it) {
    const auto [id, index] = *it;
    const NewMemoryDocument want = CrashDoc(index);
    MemoryDocument d;
    ASSERT_TRUE(m->GetDocument(model.memory_id, id, false, &d).IsNotFound()) << "deleted document " << id << " is back";
    std::vector<int32_t> tokens;
    std::vector<float> keys, values;
    ASSERT_TRUE(m->GetDocumentPairs(id, &tokens, &keys, &values).IsNotFound()) << "deleted document " << id;
    MemoryDocumentTombstone t;
    Status ts = m->GetTombstone(id, &t);
    ASSERT_TRUE(ts.ok()) << "deleted document " << id << " has no tombstone: " << ts.ToString();
    EXPECT_EQ(t.memory_id, model.memory_id);
    EXPECT_EQ(t.tokens, static_cast<int64_t>(want.tokens.size()));
    if (traced++ < 40) {  // FindTraces rebuilds the ring each time: the newest deletions suffice
      LayerMemories::Traces tr;
      ASSERT_TRUE(m->FindTraces(model.memory_id, id, &tr).ok());
      EXPECT_TRUE(tr.tombstone);
      EXPECT_FALSE(tr.row) << "deleted document " << id;
      EXPECT_EQ(tr.ring_tokens, 0) << "deleted document " << id << " still in the ring";
      EXPECT_TRUE(tr.ring_matches_rebuild);
    }
    const std::vector<float> k0 = Head0Keys(want);
    deleted_keys.insert(deleted_keys.end(), k0.begin(), k0.end());
  }
  // The ring: as a memory that read the live documents in order (FIFO: their last `capacity` tokens).
  const int64_t total = static_cast<int64_t>(all_keys.size()) / kCrashHeadDim;
  const int64_t resident = capacity == 0 ? total : std::min(total, capacity);
  EXPECT_EQ(info.resident_tokens, resident);
  int64_t held = -1;
  ASSERT_TRUE(m->CountHeldKeys(model.memory_id, all_keys.data() + (total - resident) * kCrashHeadDim, resident, &held).ok());
  EXPECT_EQ(held, resident) << "the ring lacks tokens it should hold";
  ASSERT_TRUE(m->CountHeldKeys(model.memory_id, all_keys.data(), total - resident, &held).ok());
  EXPECT_EQ(held, 0) << "the ring holds tokens a FIFO ring would have forgotten";
  ASSERT_TRUE(m->CountHeldKeys(model.memory_id, deleted_keys.data(),
                               static_cast<int64_t>(deleted_keys.size()) / kCrashHeadDim, &held).ok());
  EXPECT_EQ(held, 0) << "the ring holds tokens of deleted documents";
  // Served == rebuilt: Check, and the same search answers, bit for bit.
  std::string problems;
  ASSERT_TRUE(m->Check(&problems).ok());
  EXPECT_EQ(problems, "");
  std::unique_ptr<KvMemory> served, rebuilt;
  ASSERT_TRUE(m->Reader(model.memory_id, &served).ok());
  ASSERT_TRUE(m->RebuiltReader(model.memory_id, &rebuilt).ok());
  ASSERT_EQ(served->size(0), rebuilt->size(0));
  const int64_t n = 4, k = 5;
  std::mt19937 rng(static_cast<uint32_t>(model.max_id));
  std::vector<float> q(static_cast<size_t>(kCrashHeads * n * kCrashHeadDim));
  for (float& x : q) x = static_cast<float>(static_cast<int>(rng() % 2001) - 1000) / 1000.0f;
  const size_t slots = static_cast<size_t>(kCrashHeads * n * k);
  std::vector<float> k1(slots * kCrashHeadDim), v1(k1.size()), k2(k1.size()), v2(k1.size());
  std::vector<int64_t> t1(slots), t2(slots);
  ASSERT_TRUE(served->Search(0, q.data(), n, k, k1.data(), v1.data(), t1.data()).ok());
  ASSERT_TRUE(rebuilt->Search(0, q.data(), n, k, k2.data(), v2.data(), t2.data()).ok());
  EXPECT_EQ(t1, t2);
  EXPECT_TRUE(BitEqual(k1, k2) && BitEqual(v1, v2));
}

void RunCrashRounds(int64_t capacity, int kills, uint32_t seed) {
  testing::ScratchDir dir;
  const std::string db = dir.File("memories.db");
  const auto began = std::chrono::steady_clock::now();
  Model model;
  std::mt19937 rng(seed);
  int64_t acked_adds = 0, acked_deletes = 0, landed_adds = 0, landed_deletes = 0, lost_in_flight = 0;
  for (int round = 0; round < kills; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const int64_t start = int64_t{1000000} * (round + 1);
    const std::string output =
        RunAndKill(db, capacity, model.memory_id, start, seed * 1000 + round, 5 + static_cast<int>(rng() % 60));
    // Only complete lines are acknowledgements: the kill can land between a line's bytes.
    int64_t adds = 0;                // acknowledged adds this round: the next one is index start + adds
    bool next_is_delete = false;     // what the child was doing when killed
    for (size_t begin = 0, end; (end = output.find('\n', begin)) != std::string::npos; begin = end + 1) {
      const std::string line = output.substr(begin, end - begin);
      std::istringstream fields(line);
      std::string op;
      fields >> op;
      if (op == "READY") continue;
      if (op == "memory") {
        ASSERT_EQ(model.memory_id, 0) << line;
        fields >> model.memory_id;
        continue;
      }
      if (op == "add") {
        int64_t index = 0, id = 0;
        fields >> index >> id;
        ASSERT_EQ(index, start + adds) << line;
        ASSERT_GT(id, model.max_id) << "document id handed out twice or out of order: " << line;
        model.max_id = id;
        model.live[id] = index;
        ++adds;
        ++acked_adds;
        next_is_delete = (index - start) % 3 == 2;
      } else {
        ASSERT_EQ(op, "del") << line;
        int64_t id = 0;
        fields >> id;
        auto it = model.live.find(id);
        ASSERT_NE(it, model.live.end()) << "deleted a document never acknowledged live: " << line;
        model.deleted[it->first] = it->second;
        model.live.erase(it);
        ++acked_deletes;
        next_is_delete = false;
      }
    }
    ASSERT_GT(model.memory_id, 0) << "the child never created its memory: " << output.substr(0, 500);
    std::unique_ptr<LayerMemories> m;
    Status s = LayerMemories::Open(db, CrashOptions(), &m);
    ASSERT_TRUE(s.ok()) << s.ToString();
    // What the database holds beyond the acknowledgements: at most the one change in flight.
    std::map<int64_t, MemoryDocument> stored;
    for (int64_t after = 0;;) {
      std::vector<MemoryDocument> page;
      ASSERT_TRUE(m->ListDocuments(model.memory_id, after, 1000, &page, &after).ok());
      for (const MemoryDocument& d : page) stored[d.id] = d;
      if (after == 0) break;
    }
    int unacknowledged = 0;
    for (const auto& [id, d] : stored) {
      if (model.live.count(id) != 0) continue;
      ++unacknowledged;
      ASSERT_FALSE(next_is_delete) << "document " << id << " appeared while a delete was in flight";
      ASSERT_EQ(model.deleted.count(id), 0u) << "deleted document " << id << " is back";
      ASSERT_GT(id, model.max_id) << "unacknowledged document " << id << " with an old id";
      MemoryDocument full;
      ASSERT_TRUE(m->GetDocument(model.memory_id, id, true, &full).ok());
      ASSERT_EQ(full.text, testing::CrashDocText(start + adds)) << "the stored unacknowledged document is not the one in flight";
      model.live[id] = start + adds;  // committed before its acknowledgement: it is the child's from now on
      model.max_id = id;
      ++landed_adds;
    }
    for (auto it = model.live.begin(); it != model.live.end();) {
      if (stored.count(it->first) != 0) {
        ++it;
        continue;
      }
      ++unacknowledged;
      ASSERT_TRUE(next_is_delete) << "acknowledged document " << it->first << " lost while an add was in flight";
      MemoryDocumentTombstone t;
      ASSERT_TRUE(m->GetTombstone(it->first, &t).ok()) << "document " << it->first << " gone without a tombstone";
      model.deleted[it->first] = it->second;  // the in-flight delete committed
      it = model.live.erase(it);
      ++landed_deletes;
    }
    ASSERT_LE(unacknowledged, 1) << "more than the one in-flight change landed";
    if (unacknowledged == 0) ++lost_in_flight;
    Verify(m.get(), model, capacity, "after kill " + std::to_string(round));
    if (::testing::Test::HasFatalFailure()) return;
  }
  // Life goes on after the last kill: one more document, then a clean reopen.
  {
    std::unique_ptr<LayerMemories> m;
    ASSERT_TRUE(LayerMemories::Open(db, CrashOptions(), &m).ok());
    const int64_t index = int64_t{1000000} * (kills + 1);
    MemoryDocument added;
    ASSERT_TRUE(m->AddDocument(model.memory_id, CrashDoc(index), &added, nullptr).ok());
    ASSERT_GT(added.id, model.max_id);
    model.live[added.id] = index;
    model.max_id = added.id;
    Verify(m.get(), model, capacity, "after the last kill, one more add");
  }
  {
    std::unique_ptr<LayerMemories> m;
    ASSERT_TRUE(LayerMemories::Open(db, CrashOptions(), &m).ok());
    Verify(m.get(), model, capacity, "reopened after the last add");
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  std::printf("capacity %ld: %d kills in %.1f s: %ld acknowledged adds, %ld acknowledged deletes; in flight at the "
              "kill: %ld adds and %ld deletes committed, %ld not; %zu documents live, %zu deleted\n",
              static_cast<long>(capacity), kills, seconds, static_cast<long>(acked_adds),
              static_cast<long>(acked_deletes), static_cast<long>(landed_adds), static_cast<long>(landed_deletes),
              static_cast<long>(lost_in_flight), model.live.size(), model.deleted.size());
  EXPECT_GT(acked_adds, kills);  // the child really worked between kills
  EXPECT_GT(acked_deletes, 0);
}

TEST(LayerMemoriesCrashTest, FifoAcknowledgedChangesSurviveSigkill) { RunCrashRounds(/*capacity=*/40, 20, 7); }

TEST(LayerMemoriesCrashTest, UnboundedAcknowledgedChangesSurviveSigkill) { RunCrashRounds(/*capacity=*/0, 20, 11); }

}  // namespace
}  // namespace mnemo
