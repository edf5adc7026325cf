#include "util/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace mnemo {
namespace {

enum Type : int { kCounter, kGauge, kHistogram, kCallbackGauge };

const char* TypeName(int type) {
  switch (type) {
    case kCounter: return "counter";
    case kHistogram: return "histogram";
    default: return "gauge";
  }
}

// C++17 has no fetch_add for atomic<double>; relaxed order suffices, readers want only the value.
void AtomicAdd(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

bool IsMetricName(const std::string& s) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool IsLabelName(const std::string& s) {
  return IsMetricName(s) && s.find(':') == std::string::npos && s.rfind("__", 0) != 0;
}

void CheckMetricName(const std::string& name) {
  if (!IsMetricName(name)) throw std::logic_error("invalid metric name \"" + name + "\"");
}

std::string EscapeLabelValue(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string EscapeHelp(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// The series key and its rendering at once: `a="x",b="y"` with pairs sorted by name, so two orders of the
// same label set name one series, and sorting keys sorts series the way they are printed.
std::string LabelKey(const std::string& metric, MetricLabels labels, bool histogram) {
  std::sort(labels.begin(), labels.end());
  std::string key;
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& n = labels[i].first;
    if (!IsLabelName(n)) throw std::logic_error(metric + ": invalid label name \"" + n + "\"");
    if (histogram && n == "le") throw std::logic_error(metric + ": label \"le\" is reserved for histograms");
    if (i > 0 && labels[i - 1].first == n) throw std::logic_error(metric + ": duplicate label \"" + n + "\"");
    if (i > 0) key += ',';
    key += n + "=\"" + EscapeLabelValue(labels[i].second) + '"';
  }
  return key;
}

void AppendSample(std::string* out, const std::string& name, const std::string& labels,
                  const std::string& value) {
  *out += name;
  if (!labels.empty()) *out += '{' + labels + '}';
  *out += ' ';
  *out += value;
  *out += '\n';
}

}  // namespace

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // Beyond 2^53 not every integer is a double, so digits printed as an integer would claim false precision.
  if (v == std::trunc(v) && std::fabs(v) < 9007199254740992.0) {
    return std::to_string(static_cast<long long>(v));
  }
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);  // shortest form that round-trips
  return std::string(buf, res.ptr);
}

const std::vector<double>& DefaultLatencyBuckets() {
  static const std::vector<double> kBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                               0.25,  0.5,    1,     2.5,  5,     10,   30};
  return kBuckets;
}

void Counter::Increment(double v) {
  if (!(v > 0)) return;  // also rejects NaN, which would poison the total for good
  AtomicAdd(value_, v);
}

void Gauge::Add(double v) { AtomicAdd(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double v) {
  // First bound >= v: bounds are inclusive upper limits. NaN compares false everywhere and lands in +Inf.
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  if (std::isnan(v)) i = bounds_.size();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  AtomicAdd(sum_, v);
}

std::vector<uint64_t> Histogram::BucketCounts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  for (size_t i = 0; i < out.size(); ++i) out[i] = counts_[i].load(std::memory_order_relaxed);
  return out;
}

uint64_t Histogram::count() const {
  uint64_t n = 0;
  for (uint64_t c : BucketCounts()) n += c;
  return n;
}

struct MetricsRegistry::Family {
  std::string help;
  int type;
  std::vector<double> buckets;  // histograms only
  // Keyed by LabelKey; unique_ptr keeps the returned references stable as the maps grow.
  std::map<std::string, std::unique_ptr<Counter>> counters;
  std::map<std::string, std::unique_ptr<Gauge>> gauges;
  std::map<std::string, std::unique_ptr<Histogram>> histograms;
  std::shared_ptr<const std::function<double()>> callback;  // shared: RenderText calls it unlocked
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

MetricsRegistry::Family& MetricsRegistry::FamilyLocked(const std::string& name, const std::string& help,
                                                       int type, const std::vector<double>* buckets) {
  auto it = families_.find(name);
  if (it == families_.end()) {
    auto family = std::make_unique<Family>();
    family->help = help;
    family->type = type;
    if (buckets != nullptr) family->buckets = *buckets;
    it = families_.emplace(name, std::move(family)).first;
    return *it->second;
  }
  Family& family = *it->second;
  if (family.type != type) {
    throw std::logic_error("metric \"" + name + "\" already registered as " +
                           (family.type == kCallbackGauge ? "a callback gauge" : TypeName(family.type)));
  }
  if (buckets != nullptr && family.buckets != *buckets) {
    throw std::logic_error("histogram \"" + name + "\" already registered with other buckets");
  }
  return family;
}

Counter& MetricsRegistry::GetCounter(const std::string& name, const std::string& help,
                                     const MetricLabels& labels) {
  CheckMetricName(name);
  std::string key = LabelKey(name, labels, false);
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyLocked(name, help, kCounter, nullptr).counters[key];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::GetGauge(const std::string& name, const std::string& help, const MetricLabels& labels) {
  CheckMetricName(name);
  std::string key = LabelKey(name, labels, false);
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyLocked(name, help, kGauge, nullptr).gauges[key];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::GetHistogram(const std::string& name, const std::string& help,
                                         const std::vector<double>& buckets, const MetricLabels& labels) {
  CheckMetricName(name);
  for (size_t i = 0; i < buckets.size(); ++i) {
    if (!std::isfinite(buckets[i]) || (i > 0 && !(buckets[i - 1] < buckets[i]))) {
      throw std::logic_error("histogram \"" + name + "\": buckets must be finite and strictly increasing");
    }
  }
  std::string key = LabelKey(name, labels, true);
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = FamilyLocked(name, help, kHistogram, &buckets).histograms[key];
  if (!slot) slot = std::make_unique<Histogram>(buckets);
  return *slot;
}

void MetricsRegistry::AddGaugeCallback(const std::string& name, const std::string& help,
                                       std::function<double()> fn) {
  CheckMetricName(name);
  if (!fn) throw std::logic_error("gauge callback \"" + name + "\" is empty");
  std::lock_guard<std::mutex> lock(mu_);
  if (families_.count(name) != 0) throw std::logic_error("metric \"" + name + "\" already registered");
  Family& family = FamilyLocked(name, help, kCallbackGauge, nullptr);
  family.callback = std::make_shared<const std::function<double()>>(std::move(fn));
}

std::string MetricsRegistry::RenderText() const {
  // Callbacks run unlocked: one may take its owner's lock while a thread holding that lock is in
  // GetCounter, which would deadlock if we held mu_ here.
  std::vector<std::pair<std::string, std::shared_ptr<const std::function<double()>>>> callbacks;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, family] : families_) {
      if (family->type == kCallbackGauge) callbacks.emplace_back(name, family->callback);
    }
  }
  std::map<std::string, double> callback_values;
  for (const auto& [name, fn] : callbacks) callback_values[name] = (*fn)();

  std::string out;
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [name, family] : families_) {
    auto cb = callback_values.find(name);
    if (family->type == kCallbackGauge && cb == callback_values.end()) continue;  // added meanwhile
    out += "# HELP " + name + ' ' + EscapeHelp(family->help) + '\n';
    out += "# TYPE " + name + ' ' + TypeName(family->type) + '\n';
    switch (family->type) {
      case kCounter:
        for (const auto& [key, c] : family->counters) AppendSample(&out, name, key, FormatMetricValue(c->value()));
        break;
      case kGauge:
        for (const auto& [key, g] : family->gauges) AppendSample(&out, name, key, FormatMetricValue(g->value()));
        break;
      case kCallbackGauge:
        AppendSample(&out, name, "", FormatMetricValue(cb->second));
        break;
      case kHistogram:
        for (const auto& [key, h] : family->histograms) {
          // Count is the cumulative +Inf bucket, read from the same snapshot, so the two always agree.
          std::vector<uint64_t> counts = h->BucketCounts();
          std::string prefix = key.empty() ? "le=\"" : key + ",le=\"";
          uint64_t cumulative = 0;
          for (size_t i = 0; i < counts.size(); ++i) {
            cumulative += counts[i];
            std::string le = i < family->buckets.size() ? FormatMetricValue(family->buckets[i]) : "+Inf";
            AppendSample(&out, name + "_bucket", prefix + le + '"', std::to_string(cumulative));
          }
          AppendSample(&out, name + "_sum", key, FormatMetricValue(h->sum()));
          AppendSample(&out, name + "_count", key, std::to_string(cumulative));
        }
        break;
    }
  }
  return out;
}

}  // namespace mnemo
