// The process the LayerMemories crash test kills (tests/layer_memories_crash_test.cc): opens the memories
// database, creates a memory (MEMORY_ID 0; prints "memory <id>") or reopens the given one, and adds
// documents START, START+1, ... (tests/layer_memories_crash_doc.h) in a loop; after every third add it
// deletes a live document (the oldest or a random one). Each change is printed to stdout, and flushed,
// only after the call returned OK: "add <index> <doc_id>", "del <doc_id>". "READY" once it is open.
// The parent kills it with SIGKILL at a random moment and checks the database against these lines.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "memory/layer_memories.h"
#include "tests/layer_memories_crash_doc.h"

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s DB CAPACITY MEMORY_ID START_INDEX SEED\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int64_t capacity = std::stoll(argv[2]);
  int64_t memory_id = std::stoll(argv[3]);
  const int64_t start = std::stoll(argv[4]);
  const uint64_t seed = std::stoull(argv[5]);
  mnemo::LayerMemoriesOptions options;
  options.heads = mnemo::testing::kCrashHeads;
  options.head_dim = mnemo::testing::kCrashHeadDim;
  std::unique_ptr<mnemo::LayerMemories> m;
  mnemo::Status s = mnemo::LayerMemories::Open(path, options, &m);
  if (!s.ok()) {
    std::fprintf(stderr, "open: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<int64_t> live;  // ascending ids: oldest first
  if (memory_id == 0) {
    mnemo::MemoryInfo info;
    s = m->Create("crash", capacity, &info);
    if (!s.ok()) {
      std::fprintf(stderr, "create: %s\n", s.ToString().c_str());
      return 1;
    }
    memory_id = info.id;
    std::printf("memory %ld\n", static_cast<long>(memory_id));
  } else {
    for (int64_t after = 0;;) {
      std::vector<mnemo::MemoryDocument> page;
      s = m->ListDocuments(memory_id, after, 1000, &page, &after);
      if (!s.ok()) {
        std::fprintf(stderr, "list: %s\n", s.ToString().c_str());
        return 1;
      }
      for (const auto& d : page) live.push_back(d.id);
      if (after == 0) break;
    }
  }
  std::printf("READY\n");
  std::fflush(stdout);
  std::mt19937_64 rng(seed);
  for (int64_t index = start;; ++index) {
    mnemo::MemoryDocument added;
    s = m->AddDocument(memory_id, mnemo::testing::CrashDoc(index), &added, nullptr);
    if (!s.ok()) break;
    std::printf("add %ld %ld\n", static_cast<long>(index), static_cast<long>(added.id));
    std::fflush(stdout);
    live.push_back(added.id);
    if ((index - start) % 3 == 2) {
      const size_t pick = rng() % 2 == 0 ? 0 : static_cast<size_t>(rng() % live.size());
      const int64_t id = live[pick];
      s = m->DeleteDocument(memory_id, id, nullptr);
      if (!s.ok()) break;
      std::printf("del %ld\n", static_cast<long>(id));
      std::fflush(stdout);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
    }
  }
  std::fprintf(stderr, "write failed: %s\n", s.ToString().c_str());
  return 1;
}
