// The process the crash test kills: opens a state and adds and deletes synthetic facts in a loop,
// printing each acknowledged change ("A <id> <text>" / "D <id>") to stdout only after the call returned,
// and "d <id>" before each delete starts.
// The parent kills it with SIGKILL at a random moment and checks the state against these lines.
#include <unistd.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "memory/fact_store.h"
#include "tests/fact_store_fixture.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s STATE SEED\n", argv[0]);
    return 2;
  }
  const std::string state = argv[1];
  const uint64_t seed = std::stoull(argv[2]);
  mnemo::FactStoreOptions options;
  options.snapshot_every = 7;  // snapshots (and their removal on delete) happen often enough to be hit
  std::unique_ptr<mnemo::FactStore> store;
  mnemo::Status s = mnemo::FactStore::Open(state, options, &store);
  if (!s.ok()) {
    std::fprintf(stderr, "open: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("READY\n");
  std::fflush(stdout);
  std::mt19937_64 rng(seed);
  std::vector<int64_t> live;
  for (int64_t i = 0;; ++i) {
    if (!live.empty() && rng() % 3 == 0) {
      const size_t pick = rng() % live.size();
      const int64_t id = live[pick];
      // The intent first: a kill after the commit but before "D" leaves the fact legitimately gone.
      std::printf("d %ld\n", static_cast<long>(id));
      std::fflush(stdout);
      s = store->Delete({id}, nullptr);
      if (!s.ok()) break;
      std::printf("D %ld\n", static_cast<long>(id));
      live.erase(live.begin() + pick);
    } else {
      const int n = 1 + static_cast<int>(rng() % 3);
      std::vector<mnemo::NewFact> facts;
      for (int j = 0; j < n; ++j) {
        facts.push_back(mnemo::testing::SyntheticFact("s" + std::to_string(seed) + "-" + std::to_string(i) + "-" +
                                                      std::to_string(j), 4 + static_cast<int>(rng() % 8)));
      }
      std::vector<int64_t> ids;
      s = store->Add(facts, &ids);
      if (!s.ok()) break;
      for (size_t j = 0; j < ids.size(); ++j) {
        std::printf("A %ld %s\n", static_cast<long>(ids[j]), facts[j].text.c_str());
        live.push_back(ids[j]);
      }
    }
    std::fflush(stdout);
  }
  std::fprintf(stderr, "write failed: %s\n", s.ToString().c_str());
  return 1;
}
