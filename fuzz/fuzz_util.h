// Helpers shared by the fuzz targets (fuzz/*_fuzz.cc): a private scratch directory on tmpfs for the
// parsers that only take a path, and a check that aborts (a libFuzzer crash) when an invariant fails.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace mnemo_fuzz {

// An invariant the code under test promises; a violation is a finding, reported like a crash.
#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

// A directory of this process's own under $MNEMO_FUZZ_SCRATCH (fuzz/run.sh sets it, and removes it after
// a crash, which skips atexit), else /dev/shm (tmpfs: no disk I/O per input), else $TMPDIR or /tmp; removed
// when the process exits normally.
inline const std::string& ScratchDir() {
  static const std::string dir = [] {
    const char* scratch = std::getenv("MNEMO_FUZZ_SCRATCH");
    std::string base = scratch != nullptr && *scratch != '\0' ? scratch : "/dev/shm";
    if (::access(base.c_str(), W_OK) != 0) {
      const char* tmp = std::getenv("TMPDIR");
      base = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    }
    std::string templ = base + "/mnemo-fuzz-XXXXXX";
    if (::mkdtemp(templ.data()) == nullptr) {
      std::perror("mkdtemp");
      std::abort();
    }
    static std::string removed_at_exit;
    removed_at_exit = templ;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return templ;
  }();
  return dir;
}

// Replaces `path` with exactly `data` (plain POSIX, so the code under test sees an ordinary file).
inline void WriteFileOrDie(const std::string& path, std::string_view data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n <= 0) {
      std::perror(path.c_str());
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

// ---- Access to private members, for harnesses that drive a class's private steps ----------------------
// An explicit template instantiation may name private members (C++17 [temp.spec]/6), and the friend
// function it defines hands out the member pointer: the standard-conforming form of "#define private
// public", without compiling the code under test differently. At global scope,
// MNEMO_FUZZ_ROB(Tag, &Class::member) declares mnemo_fuzz::Tag; then Stolen(Tag{}) is the member pointer
// and Field<Tag>(object) the data member itself.
template <typename Tag, auto Member>
struct Rob {
  friend auto Stolen(Tag) { return Member; }
};

#define MNEMO_FUZZ_ROB(tag, member_pointer) \
  namespace mnemo_fuzz {                    \
  struct tag {};                            \
  auto Stolen(tag);                         \
  template struct Rob<tag, member_pointer>; \
  }

template <typename Tag, typename Object>
auto& Field(Object& object) {
  return object.*Stolen(Tag{});
}

}  // namespace mnemo_fuzz
