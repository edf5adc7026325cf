#include "memory/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "memory/json_int.h"
#include "util/file_util.h"

namespace mnemo {

std::string StateConfigPath(const std::string& dir) { return dir + "/state.json"; }
std::string FactDbPath(const std::string& dir) { return dir + "/facts.db"; }
std::string SnapshotDir(const std::string& dir) { return dir + "/snapshots"; }
std::string MemoriesDbPath(const std::string& dir) { return dir + "/memories.db"; }

std::string StateConfig::ToJson() const {
  nlohmann::ordered_json j;
  j["format_version"] = format_version;
  j["model"] = model_path;
  j["datastore"] = datastore_path;
  j["model_fingerprint"] = model_fingerprint;
  j["dim"] = dim;
  j["created_at_ms"] = created_at_ms;
  return j.dump(2) + "\n";
}

Status StateConfig::FromJson(const std::string& text, const std::string& path, StateConfig* out) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return Status::Corruption(path + ": not a mnemo state.json");
  StateConfig c;
  try {
    c.format_version = JsonInt<int>(j.at("format_version"));
    if (c.format_version > kFormatVersion) {
      return Status::Corruption(path + ": format_version " + std::to_string(c.format_version) +
                                " is newer than this mnemo understands (" + std::to_string(kFormatVersion) + ")");
    }
    c.model_path = j.at("model").get<std::string>();
    c.datastore_path = j.at("datastore").get<std::string>();
    c.model_fingerprint = j.at("model_fingerprint").get<std::string>();
    c.dim = JsonInt<int>(j.at("dim"));
    c.created_at_ms = JsonInt<int64_t>(j.at("created_at_ms"));
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(path + ": " + e.what());
  }
  if (c.dim < 1) return Status::Corruption(path + ": dim must be positive");
  *out = c;
  return Status::OK();
}

Status CreateStateDir(const std::string& dir, const StateConfig& config) {
  if (FileExists(StateConfigPath(dir))) {
    return Status::InvalidArgument(dir + ": already holds a state (state.json exists)");
  }
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(dir));
  MNEMO_RETURN_IF_ERROR(EnsureDirectory(SnapshotDir(dir)));
  return WriteFileAtomically(StateConfigPath(dir), config.ToJson());
}

Status ReadStateConfig(const std::string& dir, StateConfig* out) {
  const std::string path = StateConfigPath(dir);
  if (!FileExists(path)) return Status::NotFound(dir + ": not a mnemo state directory (no state.json)");
  std::string text;
  MNEMO_RETURN_IF_ERROR(ReadFileToString(path, &text));
  return StateConfig::FromJson(text, path, out);
}

Status StateLock::Acquire(const std::string& dir, std::unique_ptr<StateLock>* out) {
  const std::string path = dir + "/LOCK";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::IOError(path + ": cannot open: " + std::strerror(errno));
  // flock locks belong to the open file description, so a second Acquire in this process conflicts
  // too, exactly like another process.
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {0};
    const ssize_t got = ::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      std::string holder = got > 0 ? std::string(pid, static_cast<size_t>(got)) : std::string("unknown");
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return Status::FailedPrecondition(dir + ": state is in use by another process (pid " + holder + ")");
    }
    return Status::IOError(path + ": flock failed: " + std::strerror(err));
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) != static_cast<ssize_t>(me.size())) {
    ::close(fd);
    return Status::IOError(path + ": cannot record the owner's pid: " + std::strerror(errno));
  }
  out->reset(new StateLock(fd));
  return Status::OK();
}

StateLock::~StateLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

}  // namespace mnemo
