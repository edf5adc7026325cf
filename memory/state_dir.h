// StateDir: the directory one server runs from. It names the model and base datastore and holds the
// facts and their index snapshots:
//
//   state.json                   what this state serves: model and datastore paths, model fingerprint,
//                                key dimension (format version 1; written once by CreateStateDir)
//   LOCK                         flock()ed by the process that owns the state; holds its pid
//   facts.db, facts.db-wal       the FactDb (SQLite, WAL): the source of truth for facts
//   memories.db, memories.db-wal the memorizing layer's memories (memory/layer_memories.h), when the model
//                                has the layer
//   snapshots/chunk-<C>-<c>-<seq>.idx  chunk c of the facts' VectorIndex (facts [c*C, (c+1)*C)) as of change <seq>
//
// Thread-safety: the free functions are safe from any thread; a StateLock has one owner.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"

namespace mnemo {

struct StateConfig {
  static constexpr int kFormatVersion = 1;
  int format_version = kFormatVersion;
  std::string model_path;         // Absolute.
  std::string datastore_path;     // Absolute; empty when facts are the only memory.
  std::string model_fingerprint;  // ModelFingerprint of the model (facts' keys depend on it).
  int dim = 0;                    // Key dimension (the model's n_embd).
  int64_t created_at_ms = 0;

  std::string ToJson() const;
  static Status FromJson(const std::string& text, const std::string& path, StateConfig* out);
};

std::string StateConfigPath(const std::string& dir);
std::string FactDbPath(const std::string& dir);
std::string SnapshotDir(const std::string& dir);
std::string MemoriesDbPath(const std::string& dir);

// Creates `dir` (and parents) with state.json. InvalidArgument when `dir` already holds a state.
Status CreateStateDir(const std::string& dir, const StateConfig& config);
// NotFound when `dir` has no state.json; Corruption when it cannot be parsed.
Status ReadStateConfig(const std::string& dir, StateConfig* out);

// An exclusive flock on <dir>/LOCK. The kernel drops it when the process exits or is killed, so a crash
// never leaves a state locked.
class StateLock {
 public:
  // FailedPrecondition naming the holder's pid when another process (or another StateLock in this one)
  // holds the state.
  static Status Acquire(const std::string& dir, std::unique_ptr<StateLock>* out);
  ~StateLock();
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;

 private:
  explicit StateLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace mnemo
