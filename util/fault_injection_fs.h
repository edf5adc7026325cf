// A FileSystem over the real one that injects the faults storage code must survive (LevelDB's
// FaultInjectionTestEnv is the model): the Nth operation fails with EIO or ENOSPC, an append writes only
// part of its data, the disk stays full from the Nth operation on, and PowerLoss() drops everything that
// was not made durable: file data written since its last fsync, and the creations, renames and removals
// in a directory since that directory's last fsync.
//
// Use (tests):
//   FaultInjectionFileSystem fs;
//   ScopedFileSystem use(&fs);
//   fs.SetPlan({.fail_at = 3});         // the third operation fails
//   ... run the code under test, expect an error ...
//   fs.Crash();                         // the process "dies": every later operation fails
//   ... destroy the objects under test (their shutdown writes fail, as after a real crash) ...
//   fs.PowerLoss();                     // the disk as a reboot would find it; faults off again
//   ... reopen and check ...
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "util/file_system.h"

namespace mnemo {

class FaultInjectionFileSystem final : public FileSystem {
 public:
  // The operations a plan counts (a bit mask).
  enum Op : unsigned {
    kCreate = 1,    // NewWritableFile, OpenForUpdate, CreateDir
    kAppend = 2,    // WritableFile::Append
    kPunch = 4,     // WritableFile::PunchHole
    kSync = 8,      // WritableFile::Sync
    kRename = 16,   // Rename
    kRemove = 32,   // Remove
    kSyncDir = 64,  // SyncDirectory
    kAll = 127,
  };
  enum class Fault {
    kIOError,     // EIO, nothing done
    kNoSpace,     // ENOSPC, nothing done
    kShortWrite,  // an Append writes the first half of its data, then fails with ENOSPC (others: ENOSPC)
  };
  struct Plan {
    unsigned ops = kAll;    // which operations count toward fail_at
    int64_t fail_at = 0;    // the fail_at-th counted operation (1-based) fails; 0: none
    Fault fault = Fault::kIOError;
    bool sticky = false;    // every counted operation from fail_at on fails (a full disk)
  };

  explicit FaultInjectionFileSystem(FileSystem* base = FileSystem::Default());

  // Starts counting again under `plan`.
  void SetPlan(const Plan& plan);
  // Operations counted and faults injected since the last SetPlan.
  int64_t counted() const;
  int64_t injected() const;

  // From now on every operation fails (IOError "crashed"), as if the process had died.
  void Crash();
  // Reverts what a power loss would lose, in reverse order: directory entries not made durable by a
  // directory fsync, then file data past the last fsync. Then forgets all tracking, clears the plan and
  // accepts operations again. Call it with every file of the code under test closed.
  Status PowerLoss();
  // Treats everything written so far as durable (forgets the tracking without reverting).
  void ForgetUnsynced();

  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override;
  Status OpenForUpdate(const std::string& path, std::unique_ptr<WritableFile>* out) override;
  Status CreateDir(const std::string& dir) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status SyncDirectory(const std::string& dir) override;

 private:
  class File;
  friend class File;
  // What a power loss leaves of one file's data.
  struct DataState {
    int64_t synced_size = 0;              // appended files: bytes past this are lost
    std::optional<std::string> original;  // updated/truncated files: the content a power loss restores
  };
  struct DirOp {
    enum Kind { kCreated, kCreatedDir, kRenamed, kRemoved } kind;
    std::string dir;
    std::string path;                     // created or removed path; the rename's target
    std::string from;                     // the rename's source
    std::optional<std::string> previous;  // durable content `path` had before (absent: none)
  };

  // Counts an operation of kind `op`; returns the fault to inject, if any. Called with mu_ held.
  std::optional<Fault> CountLocked(Op op);
  Status FaultStatus(Fault fault, const std::string& path) const;
  // The content of `path` a power loss would leave if its directory entry were durable.
  std::optional<std::string> DurableContentLocked(const std::string& path) const;

  FileSystem* const base_;
  mutable std::mutex mu_;
  Plan plan_;
  int64_t counted_ = 0;
  int64_t injected_ = 0;
  bool crashed_ = false;
  std::map<std::string, std::shared_ptr<DataState>> data_;  // by current path
  std::vector<DirOp> dir_ops_;
};

}  // namespace mnemo
