#include "util/progress.h"

#include <unistd.h>

#include <cstdio>

namespace mnemo {

std::string FormatDuration(double seconds) {
  if (seconds < 0 || seconds != seconds) return "?";
  int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    snprintf(buf, sizeof(buf), "%ldh%02ldm", static_cast<long>(s / 3600), static_cast<long>(s % 3600 / 60));
  } else if (s >= 60) {
    snprintf(buf, sizeof(buf), "%ldm%02lds", static_cast<long>(s / 60), static_cast<long>(s % 60));
  } else {
    snprintf(buf, sizeof(buf), "%lds", static_cast<long>(s));
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, bool enabled, double log_interval_s)
    : label_(std::move(label)),
      unit_(std::move(unit)),
      total_(total),
      log_interval_s_(log_interval_s),
      enabled_(enabled),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() { Finish(); }

double ProgressBar::Elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void ProgressBar::Update(int64_t done, int64_t rate_count, const std::string& rate_unit, const std::string& extra) {
  done_ = done, rate_count_ = rate_count, rate_unit_ = rate_unit, extra_ = extra;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (since < (tty_ ? 0.1 : log_interval_s_) && done < total_) return;
  last_draw_ = now;
  Draw(false);
}

void ProgressBar::Finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_) Draw(true);
}

void ProgressBar::Draw(bool final_line) {
  const double elapsed = Elapsed();
  const double rate = elapsed > 0 ? rate_count_ / elapsed : 0;
  const double eta = done_ > 0 ? elapsed * (total_ - done_) / done_ : -1;
  const double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 0;
  std::string bar;
  if (tty_) {
    const int width = 24, filled = static_cast<int>(frac * width);
    bar = "[" + std::string(filled, '#') + std::string(width - filled, '.') + "] ";
  }
  char rate_buf[64];
  if (rate >= 1e4) {
    snprintf(rate_buf, sizeof(rate_buf), "%.1fk %s/s", rate / 1e3, rate_unit_.c_str());
  } else {
    snprintf(rate_buf, sizeof(rate_buf), "%.1f %s/s", rate, rate_unit_.c_str());
  }
  fprintf(stderr, "%s%s %s%ld/%ld %s | %s | %s %s%s%s", tty_ ? "\r\033[K" : "", label_.c_str(), bar.c_str(),
          static_cast<long>(done_), static_cast<long>(total_), unit_.c_str(), rate_buf,
          final_line ? "took" : "ETA", FormatDuration(final_line ? elapsed : eta).c_str(),
          extra_.empty() ? "" : " | ", extra_.c_str());
  if (!tty_ || final_line) fputc('\n', stderr);
  fflush(stderr);
}

}  // namespace mnemo
