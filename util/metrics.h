// Metrics: counters, gauges and histograms rendered in the Prometheus text exposition format 0.0.4
// (served at /metrics). Hand-written rather than prometheus-cpp: the format is small and we need none
// of the push/pull machinery.
//
// A metric family (a name with help text and type) holds one series per label set. Series are created on
// first use and never removed, so callers may keep the returned reference for the registry's lifetime and
// skip the lookup on hot paths. Misuse (invalid names, one name with two types) is a programming error and
// throws std::logic_error, like other contract violations in the code base.
//
// Thread-safety: every method may be called concurrently. Values are atomics (updates never block); the
// registry's mutex guards only the family and series maps, which lookups and RenderText take.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace mnemo {

// Label name=value pairs. A series is identified by its label set: order does not matter (pairs are
// sorted by name), and each name may appear once.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// Monotonically increasing (requests served, tokens generated).
class Counter {
 public:
  // Negative and NaN increments are ignored: a counter that goes down reads as a process restart.
  void Increment(double v = 1);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// A value that goes up and down (requests in flight, queue length).
class Gauge {
 public:
  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Counts observations into buckets by upper bound (inclusive: v == bound lands in that bucket) and keeps
// their sum. A render concurrent with Observe may see the sum and the counts one observation apart.
class Histogram {
 public:
  // `bounds` strictly increasing and finite (checked by the registry); +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Non-cumulative counts, one per bound plus the last for +Inf.
  std::vector<uint64_t> BucketCounts() const;
  uint64_t count() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 entries
  std::atomic<double> sum_{0};
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Returns the series `labels` of family `name`, creating either on first use. `help` is taken from the
  // call that creates the family. Throws std::logic_error when `name` has another type (or, for
  // histograms, other buckets), or a metric or label name is invalid (Prometheus rules; label names
  // starting with "__" are reserved, and so is "le" on histograms).
  Counter& GetCounter(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Gauge& GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels = {});
  Histogram& GetHistogram(const std::string& name, const std::string& help, const std::vector<double>& buckets,
                          const MetricLabels& labels = {});

  // A label-less gauge computed at render time (a datastore's size), so the owner needn't push updates.
  // `fn` runs outside the registry's lock, on the rendering thread, and may take locks of its own; it
  // must outlive the registry's last render. Registering a name twice throws std::logic_error.
  void AddGaugeCallback(const std::string& name, const std::string& help, std::function<double()> fn);

  // The whole registry in the text format: families sorted by name, each with # HELP and # TYPE lines,
  // series sorted by their rendered label string; histograms as <name>_bucket (cumulative, le="+Inf"
  // last), <name>_sum and <name>_count.
  std::string RenderText() const;

 private:
  struct Family;
  // Finds or creates family `name`; throws on a type or bucket clash. Requires mu_.
  Family& FamilyLocked(const std::string& name, const std::string& help, int type,
                       const std::vector<double>* buckets);

  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<Family>> families_;  // sorted: RenderText's order
};

// Latency buckets in seconds used across the server: 1 ms to 30 s on a 1-2.5-5 ladder.
const std::vector<double>& DefaultLatencyBuckets();

// A sample value as the text format spells it: integers (|v| < 2^53) without a decimal point, other
// values in the shortest form that reads back exactly, "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double v);

}  // namespace mnemo
