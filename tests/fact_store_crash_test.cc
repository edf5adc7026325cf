// Crash safety: a child process adds and deletes facts and is killed with SIGKILL at random moments,
// over and over on one state. After every kill the state must hold every acknowledged add, no
// acknowledged delete, and an index that matches the database exactly (no missing or orphan entries).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <omp.h>

#include <chrono>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <vector>
#include <thread>

#include "memory/fact_store.h"
#include "tests/fact_store_fixture.h"
#include "tests/test_util.h"

namespace mnemo {
namespace {

// Runs the child for about `run_ms` milliseconds after it is ready, kills it, returns its stdout.
std::string RunAndKill(const std::string& state, uint64_t seed, int run_ms) {
  int out[2];
  EXPECT_EQ(::pipe(out), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::close(out[0]);
    ::close(out[1]);
    const std::string seed_arg = std::to_string(seed);
    ::execl(MNEMO_CRASH_CHILD, MNEMO_CRASH_CHILD, state.c_str(), seed_arg.c_str(), static_cast<char*>(nullptr));
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

TEST(FactStoreCrashTest, AcknowledgedChangesSurviveSigkill) {
  testing::ScratchDir dir;
  const std::string state = dir.File("state");
  ASSERT_TRUE(testing::MakeState(state, dir.File("base"), 500, "IVF16,Flat").ok());
  std::map<int64_t, std::string> acked_live;  // id -> text
  std::set<int64_t> acked_deleted;
  std::mt19937 rng(2024);
  int64_t total_adds = 0, total_deletes = 0, rebuilds = 0, replays = 0;
  const int kKills = 32;
  for (int round = 0; round < kKills; ++round) {
    const std::string output = RunAndKill(state, 1000 + round, 5 + static_cast<int>(rng() % 120));
    // Only complete lines are acknowledgements: the kill can land between a line's bytes.
    std::vector<std::string> complete;
    for (size_t begin = 0, end; (end = output.find('\n', begin)) != std::string::npos; begin = end + 1) {
      complete.push_back(output.substr(begin, end - begin));
    }
    int64_t in_flight_delete = -1;  // a delete that started but was never acknowledged
    for (const std::string& line : complete) {
      if (line.empty() || line == "READY") continue;
      if (line[0] == 'd') {
        in_flight_delete = std::stoll(line.substr(2));
        continue;
      }
      std::istringstream fields(line);
      char op;
      int64_t id;
      fields >> op >> id;
      if (op == 'A') {
        std::string text;
        fields >> text;
        ASSERT_EQ(acked_live.count(id) + acked_deleted.count(id), 0u) << "id " << id << " handed out twice";
        acked_live[id] = text;
        ++total_adds;
      } else {
        ASSERT_EQ(op, 'D') << line;
        ASSERT_EQ(acked_live.erase(id), 1u) << "deleted an id never acknowledged: " << id;
        acked_deleted.insert(id);
        ++total_deletes;
        in_flight_delete = -1;
      }
    }
    // Restart: what was acknowledged is there, what was deleted is not, index == database.
    std::unique_ptr<FactStore> store;
    Status s = FactStore::Open(state, FactStoreOptions(), &store);
    ASSERT_TRUE(s.ok()) << "round " << round << ": " << s.ToString();
    if (in_flight_delete >= 0) {
      FactRecord f;
      if (store->Get(in_flight_delete, false, &f).IsNotFound()) {  // it committed: count it as deleted
        acked_live.erase(in_flight_delete);
        acked_deleted.insert(in_flight_delete);
      }
    }
    const RecoveryReport& r = store->recovery();
    rebuilds += r.rebuilt;
    replays += r.replayed_changes;
    EXPECT_EQ(r.missing_entries, 0) << "round " << round;
    EXPECT_EQ(r.orphan_entries, 0) << "round " << round;
    for (const auto& [id, text] : acked_live) {
      FactRecord f;
      Status g = store->Get(id, true, &f);
      ASSERT_TRUE(g.ok()) << "round " << round << ": acknowledged fact " << id << " lost: " << g.ToString();
      ASSERT_EQ(f.text, text);
      ASSERT_TRUE(store->SegmentHoldsFact(id, f.num_tokens - 1));
      // Its first entry is found at distance 0.
      const auto q = testing::FactKey(testing::SyntheticFact(text, static_cast<int>(f.num_tokens)), 0);
      MemorySearchOptions so;
      so.k = 1;
      so.nprobe = 16;
      std::vector<Neighbor> nb;
      ASSERT_TRUE(store->Search(q.data(), 1, so, &nb).ok());
      ASSERT_EQ(nb[0].distance, 0.0f) << "fact " << id;
    }
    for (int64_t id : acked_deleted) {
      FactRecord f;
      ASSERT_TRUE(store->Get(id, false, &f).IsNotFound()) << "round " << round << ": deleted fact " << id << " is back";
      Tombstone t;
      ASSERT_TRUE(store->GetTombstone(id, &t).ok());
      ASSERT_FALSE(store->SegmentHoldsFact(id, t.entries)) << "deleted fact " << id << " still indexed";
    }
    // Facts committed but killed before their acknowledgement may exist; every stored fact is indexed
    // exactly once: the segment holds exactly the database's entries.
    int64_t entries = 0;
    ListOptions page;
    page.limit = 10000;
    std::vector<FactRecord> facts;
    int64_t next = 0;
    ASSERT_TRUE(store->List(page, &facts, &next).ok());
    std::set<std::string> texts;
    for (const FactRecord& f : facts) {
      entries += f.num_tokens - 1;
      ASSERT_TRUE(texts.insert(f.text).second) << "fact text stored twice: " << f.text;
    }
    EXPECT_EQ(store->fact_entries(), entries) << "round " << round;
  }
  std::printf("%d kills: %ld acknowledged adds, %ld acknowledged deletes, %ld replayed changes, %ld rebuilds\n",
              kKills, static_cast<long>(total_adds), static_cast<long>(total_deletes), static_cast<long>(replays),
              static_cast<long>(rebuilds));
  EXPECT_GT(total_adds, kKills);  // the child really worked between kills
  EXPECT_GT(total_deletes, 0);
}

}  // namespace
}  // namespace mnemo
