// Small building blocks of the HTML audit report (eval/report_html.cc): text escaping and number
// formatting for HTML, and inline SVG charts (axes with linear or logarithmic scales, ticks, legends, lines,
// dots, grouped bars). Output is plain SVG markup: no scripts, no external references.
//
// Thread-safety: pure functions; a Plot has one owner.
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mnemo::svg {

// snprintf into a std::string.
std::string Printf(const char* format, ...) __attribute__((format(printf, 1, 2)));
// &, <, >, " and ' as HTML entities.
std::string Escape(const std::string& s);
// Three significant digits; whole numbers in full, digits grouped from 10,000 on.
std::string FormatNumber(double v);

// Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
inline const char* const kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};
inline constexpr char kGrey[] = "#8c96a3";
inline constexpr char kReferenceColour[] = "#c2410c";

// ` name="12.3"`: a coordinate attribute.
std::string At(const char* name, double v);

// Data value -> pixel along one axis: linear, log10, or log10(1 + x / unit) for counts that start at 0
// (about linear below `unit`, logarithmic above). Values outside [lo, hi] are clamped onto the axis: an ROC
// point at FPR 0 sits on the log axis' minimum.
struct Scale {
  enum Kind { kLinear, kLog, kLog1p } kind = kLinear;
  double lo = 0, hi = 1;
  double unit = 1;
  double from = 0, to = 1;  // pixels
  double Transform(double v) const {
    return kind == kLog ? std::log10(v) : kind == kLog1p ? std::log10(1 + v / unit) : v;
  }
  double operator()(double v) const {
    v = std::clamp(v, lo, hi);
    double span = Transform(hi) - Transform(lo);
    double t = span > 0 ? (Transform(v) - Transform(lo)) / span : 0.5;
    return from + t * (to - from);
  }
};

// 0, step, 2 step, ... covering [0, hi] in about five 1-2-5 steps; *top gets the last tick.
std::vector<double> NiceTicks(double hi, double* top);

struct LegendEntry {
  std::string text;  // plain text, escaped when drawn
  std::string colour;
  bool dashed = false;  // a reference line rather than a data series
};

// One chart: a plot area inside margins for tick labels (left, bottom) and a one-line legend (top); marks
// are added in pixels, from X() and Y().
class Plot {
 public:
  Plot(int width, int height, Scale x, Scale y, double reserve_right = 0)
      : width_(width), height_(height), x_(x), y_(y) {
    x_.from = left();
    x_.to = right() - reserve_right;
    y_.from = bottom();
    y_.to = top();
  }
  double X(double v) const { return x_(v); }
  double Y(double v) const { return y_(v); }
  double left() const { return 58; }
  double right() const { return width_ - 18; }
  double top() const { return 34; }
  double bottom() const { return height_ - 48; }

  void XTick(double px, const std::string& label_html, bool grid) {
    if (grid) grid_ += "<line class=\"g\"" + At("x1", px) + At("x2", px) + At("y1", top()) + At("y2", bottom()) + "/>";
    grid_ += "<text class=\"tk\"" + At("x", px) + At("y", bottom() + 16) + " text-anchor=\"middle\">" + label_html +
             "</text>";
  }
  void YTick(double v, const std::string& label_html) {
    grid_ += "<line class=\"g\"" + At("x1", left()) + At("x2", right()) + At("y1", Y(v)) + At("y2", Y(v)) + "/>";
    grid_ += "<text class=\"tk\"" + At("x", left() - 6) + At("y", Y(v) + 4) + " text-anchor=\"end\">" + label_html +
             "</text>";
  }
  void Add(const std::string& svg) { marks_ += svg; }
  void Line(double x1, double y1, double x2, double y2, const std::string& style) {
    marks_ += "<line" + At("x1", x1) + At("y1", y1) + At("x2", x2) + At("y2", y2) + " " + style + "/>";
  }
  void Polyline(const std::vector<std::pair<double, double>>& points, const char* colour) {
    std::string coords, last;
    for (const auto& [x, y] : points) {
      std::string p = Printf("%.1f,%.1f", X(x), Y(y));
      if (p != last) coords += (coords.empty() ? "" : " ") + p;  // clamped points often coincide
      last = p;
    }
    marks_ +=
        "<polyline fill=\"none\" stroke=\"" + std::string(colour) + "\" stroke-width=\"2\" points=\"" + coords + "\"/>";
  }
  void Label(double px, double py, const std::string& html, const char* anchor, const char* cls) {
    marks_ += "<text class=\"" + std::string(cls) + "\"" + At("x", px) + At("y", py) + " text-anchor=\"" + anchor +
              "\">" + html + "</text>";
  }
  // In one line above the plot area, or stacked in a box at its lower right.
  void Legend(const std::vector<LegendEntry>& entries, bool inside_lower_right = false) {
    const double kCharWidth = 6.6;  // 12px sans-serif, measured on DejaVu Sans
    double widest = 0;
    for (const auto& e : entries) widest = std::max(widest, e.text.size() * kCharWidth);
    double x = left(), y = 14;
    if (inside_lower_right) {
      x = right() - widest - 34;
      y = bottom() - 16.0 * entries.size() - 6;
      legend_ += "<rect class=\"lg\"" + At("x", x - 6) + At("y", y - 10) + At("width", widest + 34) +
                 At("height", 16.0 * entries.size() + 6) + "/>";
    }
    for (const auto& [text, colour, dashed] : entries) {
      if (dashed) {
        legend_ += "<line" + At("x1", x) + At("x2", x + 14) + At("y1", y - 2) + At("y2", y - 2) + " stroke=\"" +
                   colour + "\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/>";
      } else {
        legend_ += "<rect" + At("x", x) + At("y", y - 4) + " width=\"14\" height=\"4\" fill=\"" + colour + "\"/>";
      }
      legend_ += "<text" + At("x", x + 19) + At("y", y + 2) + ">" + Escape(text) + "</text>";
      if (inside_lower_right) {
        y += 16;
      } else {
        x += 19 + text.size() * kCharWidth + 18;
      }
    }
  }
  std::string Render(const std::string& x_title, const std::string& y_title, const std::string& description) const {
    return Printf("<svg viewBox=\"0 0 %d %d\" role=\"img\"><title>", width_, height_) + Escape(description) +
           "</title>" + grid_ + "<path class=\"ax\" d=\"M" +
           Printf("%.1f %.1fV%.1fH%.1f", left(), top(), bottom(), right()) + "\"/>" + marks_ + legend_ +
           "<text class=\"at\"" + At("x", (left() + right()) / 2) + At("y", height_ - 8.0) +
           " text-anchor=\"middle\">" + Escape(x_title) + "</text><text class=\"at\" transform=\"translate(14 " +
           Printf("%.1f", (top() + bottom()) / 2) + ") rotate(-90)\" text-anchor=\"middle\">" + Escape(y_title) +
           "</text></svg>";
  }

 private:
  int width_, height_;
  Scale x_, y_;
  std::string grid_, marks_, legend_;
};

// A chart in a <figure> with its caption (HTML); `wide` spans the page.
std::string Figure(const std::string& svg, const std::string& caption, bool wide = false);

// Bars of several series side by side per group, each labelled with its value; an absent value shows as a dash.
struct BarGroup {
  std::string label;
  std::vector<std::optional<double>> values;  // one per series
};

std::string GroupedBars(const std::vector<BarGroup>& groups, const std::vector<std::string>& series, double y_max,
                        const std::string& y_title, const std::string& description, int width,
                        std::optional<std::pair<double, std::string>> reference_line = std::nullopt);

}  // namespace mnemo::svg
