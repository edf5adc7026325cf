// ProgressBar: one status line on stderr for long jobs (training, datastore builds), with rate and ETA.
// On a terminal the line is redrawn in place at most 10 times a second; otherwise (logs, CI) a plain
// line is printed at most every `log_interval_s` seconds so logs stay readable.
//
// Thread-safety: not thread-safe; one owner updates it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace mnemo {

class ProgressBar {
 public:
  // `unit` names what `done` counts ("steps", "entries"); `rate_unit` what the rate counts.
  // A disabled bar draws nothing (for --quiet and library callers that report by other means).
  ProgressBar(std::string label, int64_t total, std::string unit, bool enabled = true,
              double log_interval_s = 10.0);
  ~ProgressBar();
  // `rate_count` is the cumulative amount the rate is computed from (e.g. tokens); `extra` is
  // appended (e.g. "loss 3.21").
  void Update(int64_t done, int64_t rate_count, const std::string& rate_unit, const std::string& extra = "");
  void Finish();
  // Seconds since construction.
  double Elapsed() const;

 private:
  void Draw(bool final_line);
  std::string label_, unit_, rate_unit_, extra_;
  int64_t total_, done_ = 0, rate_count_ = 0;
  double log_interval_s_;
  bool enabled_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

// "1h02m", "3m05s", "12s".
std::string FormatDuration(double seconds);

}  // namespace mnemo
