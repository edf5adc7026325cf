#include "util/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace mnemo {
namespace {

TEST(MetricsTest, RendersSmallRegistryExactly) {
  MetricsRegistry registry;
  registry.GetCounter("http_requests_total", "Requests served.", {{"path", "/generate"}, {"code", "200"}})
      .Increment(3);
  registry.GetCounter("http_requests_total", "Requests served.", {{"code", "404"}, {"path", "/x"}}).Increment();
  registry.GetGauge("inflight_requests", "Requests in progress.").Set(2.5);
  Histogram& h = registry.GetHistogram("request_seconds", "Request latency.", {0.25, 0.5, 1}, {{"model", "gpt2"}});
  for (double v : {0.125, 0.25, 0.75, 4.0}) h.Observe(v);
  registry.AddGaugeCallback("datastore_entries", "Entries in the datastore.", [] { return 12345.0; });

  EXPECT_EQ(registry.RenderText(),
            "# HELP datastore_entries Entries in the datastore.\n"
            "# TYPE datastore_entries gauge\n"
            "datastore_entries 12345\n"
            "# HELP http_requests_total Requests served.\n"
            "# TYPE http_requests_total counter\n"
            "http_requests_total{code=\"200\",path=\"/generate\"} 3\n"
            "http_requests_total{code=\"404\",path=\"/x\"} 1\n"
            "# HELP inflight_requests Requests in progress.\n"
            "# TYPE inflight_requests gauge\n"
            "inflight_requests 2.5\n"
            "# HELP request_seconds Request latency.\n"
            "# TYPE request_seconds histogram\n"
            "request_seconds_bucket{model=\"gpt2\",le=\"0.25\"} 2\n"
            "request_seconds_bucket{model=\"gpt2\",le=\"0.5\"} 2\n"
            "request_seconds_bucket{model=\"gpt2\",le=\"1\"} 3\n"
            "request_seconds_bucket{model=\"gpt2\",le=\"+Inf\"} 4\n"
            "request_seconds_sum{model=\"gpt2\"} 5.125\n"
            "request_seconds_count{model=\"gpt2\"} 4\n");
}

TEST(MetricsTest, EmptyRegistryRendersNothing) {
  MetricsRegistry registry;
  EXPECT_EQ(registry.RenderText(), "");
}

TEST(MetricsTest, UnlabelledHistogramHasOnlyLe) {
  MetricsRegistry registry;
  registry.GetHistogram("h", "", {1}).Observe(0.5);
  EXPECT_EQ(registry.RenderText(),
            "# HELP h \n"
            "# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 1\n"
            "h_bucket{le=\"+Inf\"} 1\n"
            "h_sum 0.5\n"
            "h_count 1\n");
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  registry.GetCounter("c", "line one\nback\\slash \"quoted\"", {{"v", "a\\b\"c\nd"}}).Increment();
  EXPECT_EQ(registry.RenderText(),
            "# HELP c line one\\nback\\\\slash \"quoted\"\n"
            "# TYPE c counter\n"
            "c{v=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsTest, FormatsIntegralAndFractionalValues) {
  EXPECT_EQ(FormatMetricValue(0), "0");
  EXPECT_EQ(FormatMetricValue(-0.0), "0");
  EXPECT_EQ(FormatMetricValue(3), "3");
  EXPECT_EQ(FormatMetricValue(-7), "-7");
  EXPECT_EQ(FormatMetricValue(2.5), "2.5");
  EXPECT_EQ(FormatMetricValue(0.1), "0.1");
  EXPECT_EQ(FormatMetricValue(1.0 / 3), "0.3333333333333333");
  EXPECT_EQ(FormatMetricValue(1e-5), "1e-05");
  EXPECT_EQ(FormatMetricValue(9007199254740991.0), "9007199254740991");  // 2^53 - 1: still an integer
  // From 2^53 on: the shortest round-trip form, fixed or scientific.
  EXPECT_EQ(FormatMetricValue(9007199254740994.0), "9007199254740994");
  EXPECT_EQ(FormatMetricValue(1e20), "1e+20");
  EXPECT_EQ(FormatMetricValue(1e300), "1e+300");
  EXPECT_EQ(FormatMetricValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatMetricValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatMetricValue(std::nan("")), "NaN");
  // Every non-special output reads back as the same double.
  for (double v : {0.1, 1.0 / 3, 1e-300, 123456.789, 6.02214076e23}) {
    EXPECT_EQ(std::stod(FormatMetricValue(v)), v) << v;
  }

  MetricsRegistry registry;
  registry.GetGauge("g", "", {{"k", "int"}}).Set(42);
  registry.GetGauge("g", "", {{"k", "frac"}}).Set(0.1);
  EXPECT_EQ(registry.RenderText(),
            "# HELP g \n"
            "# TYPE g gauge\n"
            "g{k=\"frac\"} 0.1\n"
            "g{k=\"int\"} 42\n");
}

TEST(MetricsTest, CounterIgnoresNegativeAndNaN) {
  MetricsRegistry registry;
  Counter& c = registry.GetCounter("c", "");
  c.Increment();
  c.Increment(2.5);
  c.Increment(-1);
  c.Increment(std::nan(""));
  EXPECT_EQ(c.value(), 3.5);
  Gauge& g = registry.GetGauge("g", "");
  g.Set(10);
  g.Add(-12.5);
  EXPECT_EQ(g.value(), -2.5);
}

TEST(MetricsTest, SameNameAndLabelsReturnSameObject) {
  MetricsRegistry registry;
  Counter& a = registry.GetCounter("c", "first help", {{"x", "1"}, {"y", "2"}});
  EXPECT_EQ(&a, &registry.GetCounter("c", "other help", {{"x", "1"}, {"y", "2"}}));
  EXPECT_EQ(&a, &registry.GetCounter("c", "first help", {{"y", "2"}, {"x", "1"}}));  // order-insensitive
  EXPECT_NE(&a, &registry.GetCounter("c", "first help", {{"x", "1"}, {"y", "3"}}));
  EXPECT_NE(&a, &registry.GetCounter("c", "first help"));
  // References stay valid while many more series are added.
  for (int i = 0; i < 1000; ++i) registry.GetCounter("c", "", {{"i", std::to_string(i)}});
  a.Increment(5);
  EXPECT_EQ(registry.GetCounter("c", "", {{"x", "1"}, {"y", "2"}}).value(), 5);
  EXPECT_NE(registry.RenderText().find("# HELP c first help\n"), std::string::npos);

  Gauge& g = registry.GetGauge("g", "");
  EXPECT_EQ(&g, &registry.GetGauge("g", ""));
  Histogram& h = registry.GetHistogram("h", "", {1, 2});
  EXPECT_EQ(&h, &registry.GetHistogram("h", "", {1, 2}));
}

TEST(MetricsTest, TypeClashThrows) {
  MetricsRegistry registry;
  registry.GetCounter("c", "");
  EXPECT_THROW(registry.GetGauge("c", ""), std::logic_error);
  EXPECT_THROW(registry.GetHistogram("c", "", {1}), std::logic_error);
  EXPECT_THROW(registry.AddGaugeCallback("c", "", [] { return 1.0; }), std::logic_error);
  registry.GetHistogram("h", "", {1, 2});
  EXPECT_THROW(registry.GetHistogram("h", "", {1, 3}), std::logic_error);
  EXPECT_THROW(registry.GetHistogram("h", "", {1}), std::logic_error);
  EXPECT_THROW(registry.GetCounter("h", ""), std::logic_error);
  registry.AddGaugeCallback("cb", "", [] { return 1.0; });
  EXPECT_THROW(registry.AddGaugeCallback("cb", "", [] { return 2.0; }), std::logic_error);
  EXPECT_THROW(registry.GetGauge("cb", ""), std::logic_error);
  EXPECT_THROW(registry.AddGaugeCallback("empty", "", nullptr), std::logic_error);
}

TEST(MetricsTest, BadNamesThrow) {
  MetricsRegistry registry;
  for (const char* bad : {"", "1abc", "a-b", "a b", "a.b", "é"}) {
    EXPECT_THROW(registry.GetCounter(bad, ""), std::logic_error) << bad;
    EXPECT_THROW(registry.GetGauge(bad, ""), std::logic_error) << bad;
    EXPECT_THROW(registry.GetHistogram(bad, "", {1}), std::logic_error) << bad;
    EXPECT_THROW(registry.AddGaugeCallback(bad, "", [] { return 0.0; }), std::logic_error) << bad;
  }
  for (const char* bad : {"", "1a", "a:b", "a-b", "__reserved"}) {
    EXPECT_THROW(registry.GetCounter("c", "", {{bad, "v"}}), std::logic_error) << bad;
  }
  EXPECT_THROW(registry.GetCounter("c", "", {{"a", "1"}, {"a", "2"}}), std::logic_error);
  EXPECT_THROW(registry.GetHistogram("h", "", {1}, {{"le", "1"}}), std::logic_error);
  // Buckets: finite and strictly increasing.
  const double inf = std::numeric_limits<double>::infinity();
  for (const std::vector<double>& bad : std::vector<std::vector<double>>{{1, 1}, {2, 1}, {std::nan("")}, {1, inf}}) {
    EXPECT_THROW(registry.GetHistogram("h2", "", bad), std::logic_error);
  }
  // Nothing above left a family behind.
  EXPECT_EQ(registry.RenderText(), "");
  // Valid edge cases.
  registry.GetCounter("_a:b_9", "", {{"_x", ""}, {"le", "fine on a counter"}, {"a_9", "v"}});
  registry.GetHistogram("h3", "", {});
}

TEST(MetricsTest, HistogramBoundsAreInclusive) {
  MetricsRegistry registry;
  Histogram& h = registry.GetHistogram("h", "", {1, 2, 3});
  for (double v : {0.5, 1.0, 2.0, 3.0, 3.5, -1.0}) h.Observe(v);
  EXPECT_EQ(h.BucketCounts(), (std::vector<uint64_t>{3, 1, 1, 1}));
  EXPECT_EQ(h.count(), 6u);
  EXPECT_EQ(h.sum(), 9);
  EXPECT_EQ(registry.RenderText(),
            "# HELP h \n"
            "# TYPE h histogram\n"
            "h_bucket{le=\"1\"} 3\n"
            "h_bucket{le=\"2\"} 4\n"
            "h_bucket{le=\"3\"} 5\n"
            "h_bucket{le=\"+Inf\"} 6\n"
            "h_sum 9\n"
            "h_count 6\n");
  h.Observe(std::numeric_limits<double>::infinity());
  EXPECT_EQ(h.BucketCounts().back(), 2u);
}

TEST(MetricsTest, DefaultLatencyBuckets) {
  const std::vector<double>& b = DefaultLatencyBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front(), 0.001);
  EXPECT_EQ(b.back(), 30);
  for (size_t i = 1; i < b.size(); ++i) {
    EXPECT_GT(b[i], b[i - 1]);
    EXPECT_LE(b[i] / b[i - 1], 3.0);
  }
  MetricsRegistry registry;
  registry.GetHistogram("lat", "", DefaultLatencyBuckets()).Observe(0.02);
  EXPECT_NE(registry.RenderText().find("lat_bucket{le=\"0.025\"} 1\n"), std::string::npos);
}

TEST(MetricsTest, CallbackRunsOutsideRegistryLock) {
  MetricsRegistry registry;
  int calls = 0;
  // A callback that uses the registry itself would deadlock if rendering held the lock while calling it.
  registry.AddGaugeCallback("size", "", [&] {
    registry.GetCounter("callback_calls", "").Increment();
    return static_cast<double>(++calls);
  });
  EXPECT_NE(registry.RenderText().find("size 1\n"), std::string::npos);
  std::string second = registry.RenderText();
  EXPECT_NE(second.find("size 2\n"), std::string::npos);
  EXPECT_NE(second.find("callback_calls 2\n"), std::string::npos);
}

// Checks every line against the text format's grammar, and that samples follow their family's TYPE line.
void ExpectParses(const std::string& text) {
  static const std::string kName = "[a-zA-Z_:][a-zA-Z0-9_:]*";
  static const std::string kValue = "(-?[0-9]+(\\.[0-9]+)?([eE][-+][0-9]+)?|[+-]Inf|NaN)";
  static const std::string kLabel = "[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\\n]|\\\\[\\\\\"n])*\"";
  static const std::regex kHelp("# HELP (" + kName + ") ([^\\\\\\n]|\\\\[\\\\n])*");
  static const std::regex kType("# TYPE (" + kName + ") (counter|gauge|histogram|summary|untyped)");
  static const std::regex kSample("(" + kName + ")(\\{" + kLabel + "(," + kLabel + ")*\\})? " + kValue);
  ASSERT_TRUE(text.empty() || text.back() == '\n');
  std::istringstream in(text);
  std::string line, family, type;
  int samples = 0;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kHelp)) {
      family = m[1];
      type.clear();
    } else if (std::regex_match(line, m, kType)) {
      EXPECT_EQ(m[1], family) << line;
      type = m[2];
    } else if (std::regex_match(line, m, kSample)) {
      ASSERT_FALSE(type.empty()) << "sample before TYPE: " << line;
      std::string name = m[1];
      if (type == "histogram") {
        EXPECT_TRUE(name == family + "_bucket" || name == family + "_sum" || name == family + "_count") << line;
        if (name == family + "_bucket") {
          EXPECT_NE(line.find("le=\""), std::string::npos) << line;
        }
      } else {
        EXPECT_EQ(name, family) << line;
      }
      ++samples;
    } else {
      ADD_FAILURE() << "line does not parse: " << line;
    }
  }
  EXPECT_GT(samples, 0);
}

TEST(MetricsTest, OutputParsesLineByLine) {
  MetricsRegistry registry;
  const double inf = std::numeric_limits<double>::infinity();
  registry.GetCounter("requests_total", "Requests.\nSecond line with \\.", {{"path", "/a\"b\\c\nd"}}).Increment(7);
  registry.GetCounter("requests_total", "", {{"path", ""}}).Increment(0.25);
  registry.GetGauge("weird", "", {{"k", "inf"}}).Set(inf);
  registry.GetGauge("weird", "", {{"k", "-inf"}}).Set(-inf);
  registry.GetGauge("weird", "", {{"k", "nan"}}).Set(std::nan(""));
  registry.GetGauge("weird", "", {{"k", "big"}}).Set(1e300);
  registry.GetGauge("weird", "", {{"k", "tiny"}}).Set(-1e-300);
  Histogram& h = registry.GetHistogram("latency_seconds", "Latency.", DefaultLatencyBuckets(), {{"op", "get"}});
  for (int i = 0; i < 100; ++i) h.Observe(i * 0.37);
  registry.GetHistogram("latency_seconds", "", DefaultLatencyBuckets(), {{"op", "put"}});
  registry.AddGaugeCallback("ns:size", "Size.", [] { return 1.5; });
  ExpectParses(registry.RenderText());
}

TEST(MetricsTest, ConcurrentIncrementsWhileRendering) {
  MetricsRegistry registry;
  constexpr int kThreads = 8, kIncrements = 10000;
  Counter& total = registry.GetCounter("ops_total", "Operations.");
  std::atomic<bool> done{false};
  std::atomic<int> renders{0};
  std::thread renderer([&] {
    while (!done.load()) {
      std::string text = registry.RenderText();
      EXPECT_NE(text.find("# TYPE ops_total counter\n"), std::string::npos);
      renders.fetch_add(1);
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      // Lookups (which also create series) race with the renderer too.
      Counter& mine = registry.GetCounter("ops_by_thread_total", "Per thread.", {{"t", std::to_string(t)}});
      Gauge& level = registry.GetGauge("level", "Level.");
      Histogram& h = registry.GetHistogram("op_seconds", "Op time.", {0.5, 1});
      for (int i = 0; i < kIncrements; ++i) {
        total.Increment();
        mine.Increment();
        level.Add(1);
        h.Observe(i % 2 == 0 ? 0.25 : 0.75);
        if (i % 1000 == 0) registry.GetCounter("ops_total", "Operations.").Increment(0);
      }
    });
  }
  for (std::thread& w : workers) w.join();
  done = true;
  renderer.join();
  EXPECT_GT(renders.load(), 0);

  EXPECT_EQ(total.value(), kThreads * kIncrements);
  EXPECT_EQ(registry.GetGauge("level", "").value(), kThreads * kIncrements);
  Histogram& h = registry.GetHistogram("op_seconds", "", {0.5, 1});
  EXPECT_EQ(h.BucketCounts(), (std::vector<uint64_t>{kThreads * kIncrements / 2, kThreads * kIncrements / 2, 0}));
  std::string text = registry.RenderText();
  EXPECT_NE(text.find("ops_total 80000\n"), std::string::npos);
  EXPECT_NE(text.find("ops_by_thread_total{t=\"7\"} 10000\n"), std::string::npos);
  EXPECT_NE(text.find("op_seconds_count 80000\n"), std::string::npos);
  EXPECT_NE(text.find("op_seconds_sum 40000\n"), std::string::npos);
  ExpectParses(text);
}

}  // namespace
}  // namespace mnemo
