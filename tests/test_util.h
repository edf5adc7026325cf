// Helpers shared by the test files: scratch directories and paths to shared fixtures.
#pragma once

#include <string>

namespace mnemo::testing {

// How many times longer than usual a test may wait for background work (an audit, a rebuild): sanitizer
// builds run the same work several times slower (TSan about 5-15x), and a deadline sized for the plain
// build would fail them for being slow, not wrong.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
inline constexpr int kWaitScale = 10;
#else
inline constexpr int kWaitScale = 1;
#endif

// A fresh empty directory under $TMPDIR (or /tmp), removed when the object is destroyed.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ../shared beside the checkout (GPT-2 vocabulary and tokenizer parity fixture).
std::string SharedDir();

// Writes `data` to `path`, failing the current test on error.
void WriteFileOrDie(const std::string& path, const std::string& data);

// Runs a shell command, returns its exit status and captures stdout (+stderr if merge_stderr).
int RunCommand(const std::string& cmd, std::string* output, bool merge_stderr = false);

}  // namespace mnemo::testing
