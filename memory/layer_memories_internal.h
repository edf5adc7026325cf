// Internals of LayerMemories (layer_memories.h) shared by its files; not a public header.
//   layer_memories.cc            the schema, memories and documents, rings derived from the database
//   layer_memories_snapshots.cc  ring snapshots and the memories' generations
//   layer_memories_facts.cc      the facts memory
#pragma once

#include <cstdint>
#include <memory>
#include <shared_mutex>

#include "memory/kv_ring.h"
#include "memory/layer_memories.h"
#include "memory/sqlite_db.h"

namespace mnemo {

struct LayerMemories::Entry {
  mutable std::shared_mutex mu;   // the ring: searches shared, changes exclusive
  std::unique_ptr<KvRing> ring;   // guarded by mu
  MemoryInfo info;                // guarded by LayerMemories::mu_ (documents, stored_tokens)
  bool deleted = false;           // guarded by mu
  bool snapshot_current = false;  // guarded by LayerMemories::mu_: the ring's snapshot file matches it
  bool diverged = false;          // guarded by LayerMemories::mu_: the ring failed to follow a commit
};

// The ring options of a memory of `capacity` tokens.
KvRingOptions RingOptions(const LayerMemoriesOptions& options, int64_t capacity);

// Replaces the memory's generation (inside the caller's write transaction): every write to a memory does,
// so a ring snapshot names the database state it was taken at.
Status NewGeneration(SqliteDb* db, int64_t memory_id);

}  // namespace mnemo
