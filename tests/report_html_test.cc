// The HTML audit report (eval/report_html.h): the sample report (tests/testdata/audit_report_sample.json)
// renders as one self-contained document with a chart per section and the report's numbers; hostile strings
// are escaped; absent or mistyped sections degrade to "not measured". The render test opens the document in
// headless Chromium and checks the browser logged nothing and painted a non-blank page.
#include "eval/report_html.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "tests/test_util.h"

namespace mnemo {
namespace {

using Json = nlohmann::ordered_json;
using testing::RunCommand;
using testing::ScratchDir;

const char* const kSections[] = {"config",   "exposure",   "membership", "extraction",
                                 "deletion", "parametric", "forgetting"};

Json LoadSample() {
  std::ifstream in(MNEMO_SOURCE_DIR "/tests/testdata/audit_report_sample.json");
  EXPECT_TRUE(in.good()) << "missing tests/testdata/audit_report_sample.json";
  return Json::parse(in);
}

// The markup of <section id="id"> ... </section>, or "" if the document has no such section.
std::string SectionOf(const std::string& html, const std::string& id) {
  size_t begin = html.find("<section id=\"" + id + "\"");
  if (begin == std::string::npos) return "";
  size_t end = html.find("</section>", begin);
  return html.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

size_t Count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + needle.size())) ++n;
  return n;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The viewBox width and height of the first <svg> at or after `from`.
bool ViewBox(const std::string& html, size_t from, double* width, double* height) {
  size_t at = html.find("viewBox=\"0 0 ", from);
  return at != std::string::npos && sscanf(html.c_str() + at, "viewBox=\"0 0 %lf %lf\"", width, height) == 2;
}

TEST(ReportHtmlTest, SampleIsOneSelfContainedDocument) {
  const std::string html = RenderAuditHtml(LoadSample());
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_TRUE(Contains(html, "<meta charset=\"utf-8\">"));
  EXPECT_TRUE(Contains(html, "<style>"));
  EXPECT_EQ(html.substr(html.size() - 8), "</html>\n");
  // Nothing to fetch: it must open offline, and there is no script at all.
  for (const char* banned :
       {"http://", "https://", "<script", "src=", "<link", "<img", "url(", "@import", "@font-face"}) {
    EXPECT_FALSE(Contains(html, banned)) << banned;
  }
}

TEST(ReportHtmlTest, EverySectionOfTheSampleHasItsContentAndCharts) {
  const std::string html = RenderAuditHtml(LoadSample());
  for (const char* id : kSections) {
    std::string section = SectionOf(html, id);
    ASSERT_FALSE(section.empty()) << id;
    EXPECT_TRUE(Contains(section, "<p class=\"note\">")) << id << ": no plain-language note";
    EXPECT_FALSE(Contains(section, "Not measured")) << id;
  }
  EXPECT_EQ(Count(SectionOf(html, "exposure"), "<svg"), 1u);
  EXPECT_EQ(Count(SectionOf(html, "membership"), "<svg"), 2u);  // kNN-LM and base LM ROC curves
  EXPECT_EQ(Count(SectionOf(html, "extraction"), "<svg"), 1u);
  EXPECT_EQ(Count(SectionOf(html, "deletion"), "<svg"), 1u);
  EXPECT_EQ(Count(SectionOf(html, "parametric"), "<svg"), 1u);
  EXPECT_EQ(Count(SectionOf(html, "forgetting"), "<svg"), 2u);  // exposure and extraction rate
  // Every canary is a dot: 2 models x (3 inserted + never + 3 after deletion + 3 rebuilt) x 8 canaries.
  EXPECT_EQ(Count(SectionOf(html, "exposure"), "<circle"), 2u * 10 * 8);
  // One ROC polyline per score: loss, zlib, reference, min_k under the kNN-LM; no reference under the base LM.
  EXPECT_EQ(Count(SectionOf(html, "membership"), "<polyline"), 7u);
  EXPECT_TRUE(Contains(SectionOf(html, "deletion"), "badge pass"));
}

TEST(ReportHtmlTest, ChartCoordinatesAreFiniteAndInsideTheirCharts) {
  Json report = LoadSample();
  // Points an ROC curve always has, at FPR or TPR 0, land on the log axes' minimum rather than at -infinity.
  report["membership"]["knn_lm"]["loss"]["roc"].push_back({0.0, 0.0});
  report["membership"]["knn_lm"]["loss"]["roc"].push_back({1e-9, 0.0});
  // A report built in memory can hold what JSON text cannot.
  report["membership"]["knn_lm"]["zlib"]["roc"].push_back({NAN, 0.5});
  report["exposure"]["knn_lm"]["inserted"]["1"]["extrapolated"].push_back(NAN);
  report["exposure"]["knn_lm"]["inserted"]["4"]["extrapolated"].push_back(INFINITY);
  report["forgetting"]["points"][1]["extraction_rate"] = NAN;
  const std::string html = RenderAuditHtml(report);
  size_t polylines = 0;
  for (size_t at = html.find("<polyline"); at != std::string::npos; at = html.find("<polyline", at + 1)) {
    double width = 0, height = 0;
    ASSERT_TRUE(ViewBox(html, html.rfind("<svg", at), &width, &height));
    size_t begin = html.find("points=\"", at) + 8, end = html.find('"', begin);
    std::istringstream points(html.substr(begin, end - begin));
    std::string point;
    size_t n = 0;
    while (points >> point) {
      double x = NAN, y = NAN;
      ASSERT_EQ(sscanf(point.c_str(), "%lf,%lf", &x, &y), 2) << point;
      EXPECT_TRUE(std::isfinite(x) && x >= 0 && x <= width) << point;
      EXPECT_TRUE(std::isfinite(y) && y >= 0 && y <= height) << point;
      ++n;
    }
    EXPECT_GE(n, 2u);
    ++polylines;
  }
  EXPECT_EQ(polylines, 7u + 2u);  // ROC curves, then the two forgetting curves
  EXPECT_FALSE(Contains(html, "nan")) << "a NaN reached the document";
  EXPECT_FALSE(Contains(html, "inf\"")) << "an infinity reached an attribute";
}

TEST(ReportHtmlTest, NumbersFromTheReportAppear) {
  const Json report = LoadSample();
  const std::string html = RenderAuditHtml(report);
  ASSERT_DOUBLE_EQ(report["membership"]["knn_lm"]["loss"]["auc"].get<double>(), 0.985);
  EXPECT_TRUE(Contains(SectionOf(html, "membership"), "0.985 <span class=\"ci\">[0.974, 0.993]</span>"));
  ASSERT_DOUBLE_EQ(report["membership"]["knn_lm"]["reference"]["tpr_at_0.1pct_fpr"].get<double>(), 0.975);
  EXPECT_TRUE(Contains(SectionOf(html, "membership"), "0.975"));
  // Extraction: rate (extracted/total).
  EXPECT_TRUE(Contains(SectionOf(html, "extraction"), "0.94 <span class=\"ci\">(188/200)</span>"));
  EXPECT_TRUE(Contains(SectionOf(html, "extraction"), "0.605"));
  // Exposure: the per-group mean, and the maximum line at log2 10^6 = 19.93 bits shown to 3 digits.
  ASSERT_DOUBLE_EQ(report["exposure"]["knn_lm"]["inserted"]["1"]["mean_extrapolated"].get<double>(), 17.6);
  EXPECT_TRUE(Contains(SectionOf(html, "exposure"), "<td>17.6</td>"));
  EXPECT_TRUE(Contains(SectionOf(html, "exposure"), "maximum 19.9 bits"));
  EXPECT_TRUE(Contains(SectionOf(html, "deletion"), "368"));
  EXPECT_TRUE(Contains(SectionOf(html, "parametric"), "30,720 tokens"));
  EXPECT_TRUE(Contains(SectionOf(html, "parametric"), "<td>1.19</td>"));   // the fine-tuned model alone
  EXPECT_TRUE(Contains(SectionOf(html, "parametric"), "<td>0.535</td>"));  // the original model
  EXPECT_TRUE(Contains(SectionOf(html, "forgetting"), "<td>0.875</td>"));
  EXPECT_TRUE(Contains(SectionOf(html, "config"), "1,000,000"));
  EXPECT_TRUE(Contains(SectionOf(html, "config"), "123 s"));  // 123.4 to 3 significant digits
}

TEST(ReportHtmlTest, EscapesEveryStringFromTheReport) {
  Json report = LoadSample();
  report["config"]["model"]["path"] = "<script>alert(1)</script>";
  report["config"]["model"]["fingerprint"] = "a&b\"c";
  report["config"]["state"]["dir"] = "/tmp/<img src=x onerror=alert(2)>";
  report["format"] = "<b>mnemo-audit/9</b>";
  report["membership"]["knn_lm"]["<i>score</i>"] = report["membership"]["knn_lm"]["loss"];
  report["exposure"]["knn_lm"]["inserted"]["<u>2</u>"] = report["exposure"]["knn_lm"]["inserted"]["1"];
  report["parametric_vs_datastore"]["rows"][0]["placement"] = "<em>weights & 'more'</em>";
  const std::string html = RenderAuditHtml(report);
  EXPECT_TRUE(Contains(html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
  EXPECT_TRUE(Contains(html, "a&amp;b&quot;c"));
  EXPECT_TRUE(Contains(html, "&lt;img src=x onerror=alert(2)&gt;"));
  EXPECT_TRUE(Contains(html, "&lt;i&gt;score&lt;/i&gt;"));
  EXPECT_TRUE(Contains(html, "&lt;em&gt;weights &amp; &#39;more&#39;&lt;/em&gt;"));
  for (const char* raw : {"<script", "a&b\"c", "<img", "<b>mnemo", "<i>", "<u>", "<em>"}) {
    EXPECT_FALSE(Contains(html, raw)) << raw;
  }
  EXPECT_TRUE(Contains(html, "not mnemo-audit/1"));
}

TEST(ReportHtmlTest, EmptyReportSaysNotMeasuredEverywhere) {
  const std::string html = RenderAuditHtml(Json::object());
  for (const char* id : kSections) EXPECT_TRUE(Contains(SectionOf(html, id), "Not measured")) << id;
  EXPECT_FALSE(Contains(html, "<svg"));
  EXPECT_EQ(html.substr(html.size() - 8), "</html>\n");
  // Not even an object.
  for (const Json& odd : {Json(), Json::array(), Json(42), Json("report")}) {
    std::string page = RenderAuditHtml(odd);
    EXPECT_TRUE(Contains(SectionOf(page, "forgetting"), "Not measured")) << odd.dump();
  }
}

TEST(ReportHtmlTest, MissingAndMistypedPartsDegradeToNotMeasured) {
  Json report = LoadSample();
  report.erase("membership");
  report.erase("forgetting");
  report["exposure"]["knn_lm"].erase("after_deletion");
  report["exposure"]["base_lm"] = "not an object";
  report["extraction"]["base_lm"]["greedy"] = 5;
  report["extraction"]["knn_lm"]["greedy"][1]["rate"] = "high";
  report["deletion_audit"].erase("matches_rebuilt");
  report["deletion_audit"]["before"] = nullptr;
  report["parametric_vs_datastore"]["rows"][1]["before"] = Json::array({1, 2});
  report["config"]["seconds"] = "soon";
  report["config"]["repetitions"] = Json::array({Json::object(), 1});
  const std::string html = RenderAuditHtml(report);
  EXPECT_TRUE(Contains(SectionOf(html, "membership"), "Not measured"));
  EXPECT_TRUE(Contains(SectionOf(html, "forgetting"), "Not measured"));
  EXPECT_TRUE(Contains(SectionOf(html, "deletion"), "badge unknown"));
  EXPECT_FALSE(Contains(SectionOf(html, "deletion"), "badge pass"));
  // What is left still renders, with its charts.
  for (const char* id : {"exposure", "extraction", "deletion", "parametric"}) {
    EXPECT_TRUE(Contains(SectionOf(html, id), "<svg")) << id;
  }
  EXPECT_EQ(Count(SectionOf(html, "exposure"), "<circle"), 7u * 8);  // kNN-LM without after-deletion columns
  EXPECT_TRUE(Contains(SectionOf(html, "exposure"), ">not measured</text>"));
  EXPECT_TRUE(Contains(SectionOf(html, "extraction"), "(196/200)"));  // the rate is absent, the counts are not
}

TEST(ReportHtmlTest, DeletionVerdictIsAPassOrFailBadge) {
  Json report = LoadSample();
  EXPECT_TRUE(Contains(RenderAuditHtml(report), "badge pass"));
  report["deletion_audit"]["matches_rebuilt"] = false;
  const std::string html = RenderAuditHtml(report);
  EXPECT_TRUE(Contains(html, "badge fail"));
  EXPECT_FALSE(Contains(html, "badge pass"));
}

// ---- Headless Chromium

// An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes), decoded to RGB.
struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
};

uint32_t BigEndian32(const std::string& s, size_t at) {
  return static_cast<uint32_t>(static_cast<uint8_t>(s[at])) << 24 |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 1])) << 16 |
         static_cast<uint32_t>(static_cast<uint8_t>(s[at + 2])) << 8 | static_cast<uint8_t>(s[at + 3]);
}

bool DecodePng(const std::string& png, Image* image, std::string* error) {
  auto fail = [error](const std::string& why) {
    *error = why;
    return false;
  };
  if (png.size() < 8 || png.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return fail("not a PNG");
  int bit_depth = 0, colour_type = 0, interlace = 0;
  std::string idat;
  for (size_t at = 8; at + 12 <= png.size();) {
    uint32_t length = BigEndian32(png, at);
    std::string type = png.substr(at + 4, 4);
    if (at + 12 + length > png.size()) return fail("truncated chunk " + type);
    if (type == "IHDR") {
      image->width = BigEndian32(png, at + 8);
      image->height = BigEndian32(png, at + 12);
      bit_depth = static_cast<uint8_t>(png[at + 16]);
      colour_type = static_cast<uint8_t>(png[at + 17]);
      interlace = static_cast<uint8_t>(png[at + 20]);
    } else if (type == "IDAT") {
      idat.append(png, at + 8, length);
    } else if (type == "IEND") {
      break;
    }
    at += 12 + length;
  }
  if (bit_depth != 8 || (colour_type != 2 && colour_type != 6) || interlace != 0) {
    return fail("unsupported PNG: depth " + std::to_string(bit_depth) + ", colour type " + std::to_string(colour_type));
  }
  const size_t bpp = colour_type == 6 ? 4 : 3, stride = image->width * bpp;
  std::vector<uint8_t> raw(image->height * (stride + 1));
  uLongf raw_size = raw.size();
  if (uncompress(raw.data(), &raw_size, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK ||
      raw_size != raw.size()) {
    return fail("IDAT does not inflate to " + std::to_string(raw.size()) + " bytes");
  }
  // Undo the per-row filters (PNG spec 9.2): None, Sub, Up, Average, Paeth; a, b, c are the bytes left,
  // above and above-left.
  std::vector<uint8_t> previous(stride, 0), row(stride);
  image->rgb.clear();
  for (int y = 0; y < image->height; ++y) {
    const uint8_t* line = &raw[y * (stride + 1)];
    const int filter = line[0];
    if (filter > 4) return fail("bad filter type " + std::to_string(filter));
    for (size_t i = 0; i < stride; ++i) {
      int a = i >= bpp ? row[i - bpp] : 0, b = previous[i], c = i >= bpp ? previous[i - bpp] : 0;
      int p = a + b - c, pa = std::abs(p - a), pb = std::abs(p - b), pc = std::abs(p - c);
      int paeth = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      const int predictor[] = {0, a, b, (a + b) / 2, paeth};
      row[i] = static_cast<uint8_t>(line[1 + i] + predictor[filter]);
    }
    for (size_t x = 0; x < static_cast<size_t>(image->width); ++x) {
      image->rgb.insert(image->rgb.end(), &row[x * bpp], &row[x * bpp + 3]);
    }
    previous.swap(row);
  }
  return true;
}

// 0xRRGGBB at (x, y).
uint32_t Pixel(const Image& image, int x, int y) {
  const uint8_t* p = &image.rgb[3 * (static_cast<size_t>(y) * image.width + x)];
  return p[0] << 16 | p[1] << 8 | p[2];
}

struct PixelStats {
  size_t distinct_colours = 0;
  double non_white = 0;   // fraction of pixels
  size_t chart_blue = 0;  // pixels of the charts' first colour, #0072B2
};

PixelStats Measure(const Image& image) {
  PixelStats stats;
  std::unordered_set<uint32_t> colours;
  size_t non_white = 0, pixels = image.rgb.size() / 3;
  for (size_t p = 0; p < pixels; ++p) {
    int r = image.rgb[3 * p], g = image.rgb[3 * p + 1], b = image.rgb[3 * p + 2];
    colours.insert(r << 16 | g << 8 | b);
    if (r < 245 || g < 245 || b < 245) ++non_white;
    if (std::abs(r - 0x00) <= 6 && std::abs(g - 0x72) <= 6 && std::abs(b - 0xB2) <= 6) ++stats.chart_blue;
  }
  stats.distinct_colours = colours.size();
  stats.non_white = pixels ? static_cast<double>(non_white) / pixels : 0;
  return stats;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Runs headless Chromium on a file with `flags`, killed after 60 s (exit status 124); stdout into *out, stderr
// (the browser's log, console messages included) into *log. HOME and the profile live in the scratch directory.
int RunChromium(const ScratchDir& dir, const std::string& flags, const std::string& html_path, std::string* out,
                std::string* log) {
  std::string cmd = "HOME='" + dir.path() + "' timeout -k 5 60 chromium --headless --no-sandbox --disable-gpu " +
                    "--disable-dev-shm-usage --no-first-run --user-data-dir='" + dir.File("profile") +
                    "' --enable-logging=stderr --v=0 " + flags + " 'file://" + html_path + "' 2>'" +
                    dir.File("chromium.log") + "'";
  int status = RunCommand(cmd, out);
  *log = ReadFile(dir.File("chromium.log"));
  return status;
}

// The log lines of messages from the page's console (Chromium logs them as "...:CONSOLE:<line>] "text"",
// console.error and uncaught exceptions included). The report has no script, so every one is a fault.
std::vector<std::string> ConsoleMessages(const std::string& log) {
  std::vector<std::string> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (Contains(line, ":CONSOLE") || Contains(line, "Uncaught")) lines.push_back(line);
  }
  return lines;
}

bool HaveChromium() {
  std::string out;
  return RunCommand("command -v chromium", &out) == 0;
}

const char kInstallHint[] = "chromium not found: run scripts/install-deps.sh (Debian package chromium)";

TEST(ReportHtmlRenderTest, RendersInHeadlessChromiumWithoutConsoleErrors) {
  ASSERT_TRUE(HaveChromium()) << kInstallHint;
  ScratchDir dir;
  const std::string html = RenderAuditHtml(LoadSample());
  testing::WriteFileOrDie(dir.File("report.html"), html);
  std::string out, log;
  int status = RunChromium(dir, "--screenshot='" + dir.File("report.png") + "' --window-size=1280,2000",
                           dir.File("report.html"), &out, &log);
  ASSERT_EQ(status, 0) << (status == 124 ? "chromium timed out\n" : "") << log;
  EXPECT_TRUE(ConsoleMessages(log).empty()) << ConsoleMessages(log).front();

  Image image;
  std::string error;
  ASSERT_TRUE(DecodePng(ReadFile(dir.File("report.png")), &image, &error)) << error << "\n" << log;
  EXPECT_EQ(image.width, 1280);
  EXPECT_EQ(image.height, 2000);
  EXPECT_EQ(Pixel(image, 4, 4), 0xeef0f3u) << "not the page background: the PNG decoder or the page is broken";
  PixelStats stats = Measure(image);
  EXPECT_GE(stats.distinct_colours, 3u);
  EXPECT_GE(stats.non_white, 0.05);
  EXPECT_GE(stats.chart_blue, 500u) << "the SVG charts did not paint";

  // The whole document reached the DOM: every chart and section made it through the parser.
  status = RunChromium(dir, "--dump-dom", dir.File("report.html"), &out, &log);
  ASSERT_EQ(status, 0) << log;
  EXPECT_TRUE(ConsoleMessages(log).empty()) << ConsoleMessages(log).front();
  EXPECT_EQ(Count(out, "<svg"), Count(html, "<svg"));
  EXPECT_EQ(Count(out, "<polyline"), Count(html, "<polyline"));
  EXPECT_TRUE(Contains(out, "<section id=\"forgetting\">"));
}

// The checks above can fail: this Chromium logs a page's script errors where ConsoleMessages looks, and a
// blank page fails the pixel checks.
TEST(ReportHtmlRenderTest, ConsoleAndBlankChecksCatchABrokenPage) {
  ASSERT_TRUE(HaveChromium()) << kInstallHint;
  ScratchDir dir;
  testing::WriteFileOrDie(
      dir.File("broken.html"),
      "<!DOCTYPE html><html><body><script>throw new Error('render-check-canary')</script></body></html>");
  std::string out, log;
  int status = RunChromium(dir, "--screenshot='" + dir.File("broken.png") + "' --window-size=400,300",
                           dir.File("broken.html"), &out, &log);
  ASSERT_EQ(status, 0) << log;
  std::vector<std::string> messages = ConsoleMessages(log);
  ASSERT_EQ(messages.size(), 1u) << log;
  EXPECT_TRUE(Contains(messages[0], "Uncaught Error: render-check-canary")) << messages[0];
  Image image;
  std::string error;
  ASSERT_TRUE(DecodePng(ReadFile(dir.File("broken.png")), &image, &error)) << error;
  EXPECT_EQ(Pixel(image, 4, 4), 0xffffffu);
  PixelStats stats = Measure(image);
  EXPECT_LT(stats.distinct_colours, 3u);
  EXPECT_LT(stats.non_white, 0.05);
  EXPECT_EQ(stats.chart_blue, 0u);
}

}  // namespace
}  // namespace mnemo
