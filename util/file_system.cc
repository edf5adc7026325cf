#include "util/file_system.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

namespace mnemo {
namespace {

Status ErrnoStatus(const std::string& path, const char* what) {
  return Status::IOError(path + ": " + what + ": " + std::strerror(errno));
}

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Append(std::string_view data) override {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(path_, "write failed");
      done += static_cast<size_t>(n);
    }
    return Status::OK();
  }

  Status PunchHole(int64_t offset, int64_t length) override {
    if (length <= 0) return Status::OK();
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0) return Status::OK();
    if (errno != EOPNOTSUPP && errno != ENOSYS) return ErrnoStatus(path_, "cannot punch a hole");
    const std::string zeros(1 << 20, '\0');  // a file system without holes: write the zeros
    for (int64_t done = 0; done < length;) {
      const size_t n = static_cast<size_t>(std::min<int64_t>(length - done, static_cast<int64_t>(zeros.size())));
      const ssize_t w = ::pwrite(fd_, zeros.data(), n, offset + done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return ErrnoStatus(path_, "cannot zero a range");
      done += w;
    }
    return Status::OK();
  }

  Status Sync() override { return ::fsync(fd_) == 0 ? Status::OK() : ErrnoStatus(path_, "fsync failed"); }

  Status Close() override {
    if (fd_ < 0) return Status::OK();
    const int rc = ::close(fd_);
    fd_ = -1;
    return rc == 0 ? Status::OK() : ErrnoStatus(path_, "close failed");
  }

 private:
  const std::string path_;
  int fd_;
};

class PosixFileSystem final : public FileSystem {
 public:
  Status NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoStatus(path, "cannot create");
    *out = std::make_unique<PosixWritableFile>(path, fd);
    return Status::OK();
  }

  Status OpenForUpdate(const std::string& path, std::unique_ptr<WritableFile>* out) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? Status::NotFound(path + ": no such file") : ErrnoStatus(path, "cannot open");
    *out = std::make_unique<PosixWritableFile>(path, fd);
    return Status::OK();
  }

  Status CreateDir(const std::string& dir) override {
    if (::mkdir(dir.c_str(), 0755) == 0) return Status::OK();
    struct stat st;
    if (errno == EEXIST && ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) return Status::OK();
    return ErrnoStatus(dir, "cannot create directory");
  }

  Status Rename(const std::string& from, const std::string& to) override {
    return ::rename(from.c_str(), to.c_str()) == 0 ? Status::OK() : ErrnoStatus(to, "rename failed");
  }

  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) == 0) return Status::OK();
    return errno == ENOENT ? Status::NotFound(path + ": no such file") : ErrnoStatus(path, "cannot remove");
  }

  Status SyncDirectory(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(dir, "cannot open directory");
    const int rc = ::fsync(fd);
    const int saved = errno;
    ::close(fd);
    errno = saved;
    return rc == 0 ? Status::OK() : ErrnoStatus(dir, "directory fsync failed");
  }
};

std::atomic<FileSystem*> current_file_system{nullptr};

}  // namespace

FileSystem* FileSystem::Default() {
  static PosixFileSystem* const fs = new PosixFileSystem();  // never destroyed: used until exit
  return fs;
}

FileSystem* CurrentFileSystem() {
  FileSystem* fs = current_file_system.load(std::memory_order_acquire);
  return fs != nullptr ? fs : FileSystem::Default();
}

ScopedFileSystem::ScopedFileSystem(FileSystem* fs) : previous_(current_file_system.exchange(fs)) {}

ScopedFileSystem::~ScopedFileSystem() { current_file_system.store(previous_); }

}  // namespace mnemo
