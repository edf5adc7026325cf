#include "util/fault_injection_fs.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "util/file_util.h"

namespace mnemo {
namespace {

std::string DirectoryOf(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().lexically_normal().string();
  return dir.empty() ? "." : dir;
}

std::string NormalDirectory(const std::string& dir) {
  std::string d = std::filesystem::path(dir).lexically_normal().string();
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d.empty() ? "." : d;
}

void WriteRaw(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

}  // namespace

class FaultInjectionFileSystem::File final : public WritableFile {
 public:
  File(FaultInjectionFileSystem* fs, std::string path, std::unique_ptr<WritableFile> base,
       std::shared_ptr<DataState> state, bool update)
      : fs_(fs), path_(std::move(path)), base_(std::move(base)), state_(std::move(state)), update_(update) {}

  Status Append(std::string_view data) override {
    std::lock_guard lock(fs_->mu_);
    if (fs_->crashed_) return Crashed();
    if (const auto fault = fs_->CountLocked(kAppend)) {
      if (*fault == Fault::kShortWrite && data.size() > 1) {
        const std::string_view half = data.substr(0, data.size() / 2);
        if (base_->Append(half).ok()) written_ += static_cast<int64_t>(half.size());
      }
      return fs_->FaultStatus(*fault, path_);
    }
    MNEMO_RETURN_IF_ERROR(base_->Append(data));
    written_ += static_cast<int64_t>(data.size());
    return Status::OK();
  }

  Status PunchHole(int64_t offset, int64_t length) override {
    std::lock_guard lock(fs_->mu_);
    if (fs_->crashed_) return Crashed();
    if (const auto fault = fs_->CountLocked(kPunch)) return fs_->FaultStatus(*fault, path_);
    return base_->PunchHole(offset, length);
  }

  Status Sync() override {
    std::lock_guard lock(fs_->mu_);
    if (fs_->crashed_) return Crashed();
    if (const auto fault = fs_->CountLocked(kSync)) return fs_->FaultStatus(*fault, path_);
    MNEMO_RETURN_IF_ERROR(base_->Sync());
    std::error_code ec;
    state_->synced_size = update_ ? static_cast<int64_t>(std::filesystem::file_size(path_, ec)) : written_;
    state_->original.reset();  // the current content is durable now
    return Status::OK();
  }

  Status Close() override { return base_->Close(); }

 private:
  Status Crashed() const { return Status::IOError(path_ + ": file system crashed (fault injection)"); }

  FaultInjectionFileSystem* const fs_;
  const std::string path_;
  const std::unique_ptr<WritableFile> base_;
  const std::shared_ptr<DataState> state_;
  const bool update_;  // opened by OpenForUpdate (punched in place, never appended)
  int64_t written_ = 0;
};

FaultInjectionFileSystem::FaultInjectionFileSystem(FileSystem* base) : base_(base) {}

void FaultInjectionFileSystem::SetPlan(const Plan& plan) {
  std::lock_guard lock(mu_);
  plan_ = plan;
  counted_ = 0;
  injected_ = 0;
}

int64_t FaultInjectionFileSystem::counted() const {
  std::lock_guard lock(mu_);
  return counted_;
}

int64_t FaultInjectionFileSystem::injected() const {
  std::lock_guard lock(mu_);
  return injected_;
}

void FaultInjectionFileSystem::Crash() {
  std::lock_guard lock(mu_);
  crashed_ = true;
}

std::optional<FaultInjectionFileSystem::Fault> FaultInjectionFileSystem::CountLocked(Op op) {
  if ((plan_.ops & op) == 0) return std::nullopt;
  ++counted_;
  if (plan_.fail_at <= 0) return std::nullopt;
  if (counted_ == plan_.fail_at || (plan_.sticky && counted_ > plan_.fail_at)) {
    ++injected_;
    return plan_.fault;
  }
  return std::nullopt;
}

Status FaultInjectionFileSystem::FaultStatus(Fault fault, const std::string& path) const {
  return Status::IOError(path + ": injected fault: " +
                         (fault == Fault::kIOError ? "Input/output error" : "No space left on device"));
}

std::optional<std::string> FaultInjectionFileSystem::DurableContentLocked(const std::string& path) const {
  std::string content;
  if (!ReadFileToString(path, &content).ok()) return std::nullopt;
  const auto it = data_.find(path);
  if (it != data_.end()) {
    if (it->second->original.has_value()) return it->second->original;
    content.resize(std::min<size_t>(content.size(), static_cast<size_t>(it->second->synced_size)));
  }
  return content;
}

Status FaultInjectionFileSystem::NewWritableFile(const std::string& path, std::unique_ptr<WritableFile>* out) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IOError(path + ": file system crashed (fault injection)");
  if (const auto fault = CountLocked(kCreate)) return FaultStatus(*fault, path);
  const std::optional<std::string> previous = DurableContentLocked(path);
  std::unique_ptr<WritableFile> base;
  MNEMO_RETURN_IF_ERROR(base_->NewWritableFile(path, &base));
  auto state = std::make_shared<DataState>();
  if (previous.has_value()) {
    state->original = previous;  // truncated in place: a power loss before a sync brings the old data back
  } else {
    dir_ops_.push_back({DirOp::kCreated, DirectoryOf(path), path, "", std::nullopt});
  }
  data_[path] = state;
  *out = std::make_unique<File>(this, path, std::move(base), std::move(state), false);
  return Status::OK();
}

Status FaultInjectionFileSystem::OpenForUpdate(const std::string& path, std::unique_ptr<WritableFile>* out) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IOError(path + ": file system crashed (fault injection)");
  if (const auto fault = CountLocked(kCreate)) return FaultStatus(*fault, path);
  // What a power loss would leave now: updates until the next sync are lost with it.
  std::optional<std::string> durable = DurableContentLocked(path);
  std::unique_ptr<WritableFile> base;
  MNEMO_RETURN_IF_ERROR(base_->OpenForUpdate(path, &base));
  std::shared_ptr<DataState>& state = data_[path];
  if (state == nullptr) state = std::make_shared<DataState>();
  if (!state->original.has_value()) state->original = std::move(durable);
  *out = std::make_unique<File>(this, path, std::move(base), state, true);
  return Status::OK();
}

Status FaultInjectionFileSystem::CreateDir(const std::string& dir) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IOError(dir + ": file system crashed (fault injection)");
  if (const auto fault = CountLocked(kCreate)) return FaultStatus(*fault, dir);
  const bool existed = std::filesystem::is_directory(dir);
  MNEMO_RETURN_IF_ERROR(base_->CreateDir(dir));
  if (!existed) dir_ops_.push_back({DirOp::kCreatedDir, DirectoryOf(NormalDirectory(dir)), NormalDirectory(dir), "", std::nullopt});
  return Status::OK();
}

Status FaultInjectionFileSystem::Rename(const std::string& from, const std::string& to) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IOError(to + ": file system crashed (fault injection)");
  if (const auto fault = CountLocked(kRename)) return FaultStatus(*fault, to);
  const std::optional<std::string> previous = DurableContentLocked(to);
  MNEMO_RETURN_IF_ERROR(base_->Rename(from, to));
  dir_ops_.push_back({DirOp::kRenamed, DirectoryOf(to), to, from, previous});
  data_.erase(to);
  if (auto it = data_.find(from); it != data_.end()) {
    data_[to] = it->second;
    data_.erase(it);
  }
  return Status::OK();
}

Status FaultInjectionFileSystem::Remove(const std::string& path) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IOError(path + ": file system crashed (fault injection)");
  if (const auto fault = CountLocked(kRemove)) return FaultStatus(*fault, path);
  const std::optional<std::string> previous = DurableContentLocked(path);
  MNEMO_RETURN_IF_ERROR(base_->Remove(path));
  dir_ops_.push_back({DirOp::kRemoved, DirectoryOf(path), path, "", previous});
  data_.erase(path);
  return Status::OK();
}

Status FaultInjectionFileSystem::SyncDirectory(const std::string& dir) {
  std::lock_guard lock(mu_);
  if (crashed_) return Status::IOError(dir + ": file system crashed (fault injection)");
  if (const auto fault = CountLocked(kSyncDir)) return FaultStatus(*fault, dir);
  MNEMO_RETURN_IF_ERROR(base_->SyncDirectory(dir));
  const std::string normal = NormalDirectory(dir);
  dir_ops_.erase(std::remove_if(dir_ops_.begin(), dir_ops_.end(), [&](const DirOp& op) { return op.dir == normal; }),
                 dir_ops_.end());
  return Status::OK();
}

Status FaultInjectionFileSystem::PowerLoss() {
  std::lock_guard lock(mu_);
  // File data first, by the names the files have now; then the directory entries, newest first, which
  // carry the reverted data back to the names they had.
  for (const auto& [path, state] : data_) {
    if (!FileExists(path)) continue;
    if (state->original.has_value()) {
      WriteRaw(path, *state->original);
    } else if (::truncate(path.c_str(), state->synced_size) != 0) {
      return Status::IOError(path + ": cannot truncate (power loss simulation)");
    }
  }
  for (auto op = dir_ops_.rbegin(); op != dir_ops_.rend(); ++op) {
    switch (op->kind) {
      case DirOp::kCreated:
        ::unlink(op->path.c_str());
        break;
      case DirOp::kCreatedDir: {
        std::error_code ec;  // what was created inside goes with it
        std::filesystem::remove_all(op->path, ec);
        break;
      }
      case DirOp::kRenamed:
        if (::rename(op->path.c_str(), op->from.c_str()) != 0) ::unlink(op->path.c_str());
        if (op->previous.has_value()) WriteRaw(op->path, *op->previous);
        break;
      case DirOp::kRemoved:
        if (op->previous.has_value()) WriteRaw(op->path, *op->previous);
        break;
    }
  }
  data_.clear();
  dir_ops_.clear();
  plan_ = Plan();
  counted_ = 0;
  crashed_ = false;
  return Status::OK();
}

void FaultInjectionFileSystem::ForgetUnsynced() {
  std::lock_guard lock(mu_);
  data_.clear();
  dir_ops_.clear();
}

}  // namespace mnemo
