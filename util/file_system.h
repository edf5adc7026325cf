// The file-system operations that every durable write outside SQLite goes through: snapshots, datastore
// files and manifests, state.json, checkpoints, audit reports. It is LevelDB's Env reduced to what mnemo
// writes: files created and appended, in-place hole punching, fsync, mkdir, rename, unlink and directory
// fsync.
// Reads stay plain POSIX (a failed read is an error at open, never a lost write).
//
// CurrentFileSystem() is the POSIX implementation unless a test installed another with ScopedFileSystem
// (util/fault_injection_fs.h fails the Nth operation, writes short, fills the disk and simulates power
// loss). The helpers of util/file_util.h (WriteFileAtomically, RemoveFileDurably) use it, so a test that
// installs a fault-injecting file system reaches every write path without the callers knowing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mnemo {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends at the end (files from NewWritableFile).
  virtual Status Append(std::string_view data) = 0;
  // Zeroes [offset, offset + length) in place, freeing its blocks where the file system can (files from
  // OpenForUpdate; the size is kept).
  virtual Status PunchHole(int64_t offset, int64_t length) = 0;
  // fsync: the data written so far survives a power loss (the file's name needs its directory synced).
  virtual Status Sync() = 0;
  // Closes the descriptor; the destructor closes an unclosed file and drops the error.
  virtual Status Close() = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // The POSIX implementation (a process-wide singleton).
  static FileSystem* Default();

  // Creates `path` (truncating an existing file) for appending.
  virtual Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) = 0;
  // Opens an existing file for PunchHole.
  virtual Status OpenForUpdate(const std::string& path, std::unique_ptr<WritableFile>* out) = 0;
  // mkdir(2) of one directory (its parent must exist); OK when it already exists as a directory.
  virtual Status CreateDir(const std::string& dir) = 0;
  // rename(2): atomically replaces `to`.
  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  // unlink(2); NotFound when `path` does not exist.
  virtual Status Remove(const std::string& path) = 0;
  // fsync of a directory, which makes the creations, renames and removals inside it durable.
  virtual Status SyncDirectory(const std::string& dir) = 0;
};

// The file system that util/file_util.h and the storage layers write through.
FileSystem* CurrentFileSystem();

// Installs `fs` as CurrentFileSystem() for the lifetime of this object (tests). Not thread-safe against
// writes in flight: install it before the code under test starts writing.
class ScopedFileSystem {
 public:
  explicit ScopedFileSystem(FileSystem* fs);
  ~ScopedFileSystem();
  ScopedFileSystem(const ScopedFileSystem&) = delete;
  ScopedFileSystem& operator=(const ScopedFileSystem&) = delete;

 private:
  FileSystem* previous_;
};

}  // namespace mnemo
