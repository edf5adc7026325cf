#include "eval/svg_plot.h"

#include <stdarg.h>
#include <stdio.h>

#include <iterator>

namespace mnemo::svg {

std::string Printf(const char* format, ...) {
  char buf[256];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  if (n < 0) return "";
  if (static_cast<size_t>(n) < sizeof(buf)) return std::string(buf, n);
  std::string out(n + 1, '\0');
  va_start(args, format);
  vsnprintf(out.data(), out.size(), format, args);
  va_end(args);
  out.resize(n);
  return out;
}

std::string Escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string FormatNumber(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "&infin;" : "&minus;&infin;";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::string digits = Printf("%.0f", std::fabs(v));
    if (digits.size() > 4) {
      for (int i = static_cast<int>(digits.size()) - 3; i > 0; i -= 3) digits.insert(i, ",");
    }
    return (v < 0 ? "-" : "") + digits;
  }
  if (std::fabs(v) >= 999.5 && std::fabs(v) < 1e15) return Printf("%.0f", v);
  return Printf("%.3g", v);
}

std::string At(const char* name, double v) { return Printf(" %s=\"%.1f\"", name, v); }

std::vector<double> NiceTicks(double hi, double* top) {
  if (!(hi > 0) || !std::isfinite(hi)) hi = 1;
  double raw = hi / 5, magnitude = std::pow(10, std::floor(std::log10(raw))), ratio = raw / magnitude;
  double step = magnitude * (ratio <= 1 ? 1 : ratio <= 2 ? 2 : ratio <= 5 ? 5 : 10);
  std::vector<double> ticks;
  for (int i = 0; ticks.empty() || ticks.back() < hi * (1 - 1e-9); ++i) ticks.push_back(i * step);
  *top = ticks.back();
  return ticks;
}

std::string Figure(const std::string& svg, const std::string& caption, bool wide) {
  return std::string("<figure") + (wide ? " class=\"wide\"" : "") + ">" + svg + "<figcaption>" + caption +
         "</figcaption></figure>";
}

std::string GroupedBars(const std::vector<BarGroup>& groups, const std::vector<std::string>& series, double y_max,
                        const std::string& y_title, const std::string& description, int width,
                        std::optional<std::pair<double, std::string>> reference_line) {
  for (const BarGroup& g : groups) {
    for (const auto& v : g.values) {
      if (v) y_max = std::max(y_max, *v);
    }
  }
  double top;
  std::vector<double> ticks = NiceTicks(y_max, &top);
  Plot plot(width, 300, Scale{Scale::kLinear, 0, static_cast<double>(groups.size())}, Scale{Scale::kLinear, 0, top});
  for (double t : ticks) plot.YTick(t, FormatNumber(t));
  const double bar = 0.76 / std::max<size_t>(series.size(), 1);  // of a group's width
  for (size_t g = 0; g < groups.size(); ++g) {
    plot.XTick(plot.X(g + 0.5), Escape(groups[g].label), false);
    for (size_t s = 0; s < series.size() && s < groups[g].values.size(); ++s) {
      double x0 = plot.X(g + 0.12 + s * bar), x1 = plot.X(g + 0.12 + (s + 1) * bar) - 2;
      const auto& v = groups[g].values[s];
      if (!v) {
        plot.Label((x0 + x1) / 2, plot.bottom() - 4, "&mdash;", "middle", "vl");
        continue;
      }
      plot.Add("<rect" + At("x", x0) + At("y", plot.Y(*v)) + At("width", x1 - x0) +
               At("height", plot.bottom() - plot.Y(*v)) + " fill=\"" + kPalette[s % std::size(kPalette)] + "\"/>");
      plot.Label((x0 + x1) / 2, plot.Y(*v) - 4, FormatNumber(*v), "middle", "vl");
    }
  }
  std::vector<LegendEntry> legend;
  for (size_t s = 0; s < series.size(); ++s) legend.push_back({series[s], kPalette[s % std::size(kPalette)]});
  if (reference_line) {
    double y = plot.Y(reference_line->first);
    plot.Line(plot.left(), y, plot.right(), y, "class=\"ref\"");
    legend.push_back({reference_line->second, kReferenceColour, true});
  }
  plot.Legend(legend);
  return plot.Render("", y_title, description);
}

}  // namespace mnemo::svg
