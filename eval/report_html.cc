#include "eval/report_html.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "eval/svg_plot.h"

namespace mnemo {
namespace {

using Json = nlohmann::ordered_json;
using svg::At;
using svg::BarGroup;
using svg::Escape;
using svg::Figure;
using svg::FormatNumber;
using svg::GroupedBars;
using svg::kGrey;
using svg::kPalette;
using svg::kReferenceColour;
using svg::LegendEntry;
using svg::NiceTicks;
using svg::Plot;
using svg::Printf;
using svg::Scale;

const char kNotMeasured[] = "<span class=\"na\" title=\"not measured\">&mdash;</span>";

// ---- JSON access that never throws: a missing key or a value of the wrong type reads as absent.

const Json* Get(const Json* j, const std::string& key) {
  if (j == nullptr || !j->is_object()) return nullptr;
  auto it = j->find(key);
  return it == j->end() ? nullptr : &*it;
}

// The value at `key` if it is an object (a section, a model's measures).
const Json* GetObject(const Json* j, const std::string& key) {
  const Json* value = Get(j, key);
  return value != nullptr && value->is_object() ? value : nullptr;
}

// Non-finite numbers read as absent too: they cannot be drawn.
std::optional<double> NumberAt(const Json* j, const std::string& key) {
  const Json* value = Get(j, key);
  if (value == nullptr || !value->is_number() || !std::isfinite(value->get<double>())) return std::nullopt;
  return value->get<double>();
}

std::string Text(const Json* j) { return j != nullptr && j->is_string() ? j->get<std::string>() : std::string(); }

// A number, string, boolean or array of those, ready for HTML.
std::string Value(const Json* j) {
  if (j == nullptr) return kNotMeasured;
  if (j->is_number()) return FormatNumber(j->get<double>());
  if (j->is_string()) return Escape(j->get<std::string>());
  if (j->is_boolean()) return j->get<bool>() ? "yes" : "no";
  if (!j->is_array() || j->empty()) return kNotMeasured;
  std::string out;
  for (const Json& item : *j) {
    if (!out.empty()) out += ", ";
    out += item.is_structured() ? "&hellip;" : Value(&item);
  }
  return out;
}

std::string NumberCell(std::optional<double> v) { return v ? FormatNumber(*v) : kNotMeasured; }

// "0.99 [0.98, 1]": a value with its confidence interval, when the report has one.
std::string WithInterval(const Json* obj, const std::string& key) {
  std::string out = NumberCell(NumberAt(obj, key));
  const Json* ci = Get(obj, key + "_ci");
  if (ci != nullptr && ci->is_array() && ci->size() == 2 && (*ci)[0].is_number() && (*ci)[1].is_number()) {
    out += " <span class=\"ci\">[" + FormatNumber((*ci)[0].get<double>()) + ", " +
           FormatNumber((*ci)[1].get<double>()) + "]</span>";
  }
  return out;
}

// "0.9 (180/200)" for {"extracted", "total", "rate"}.
std::string RateCell(const Json* rate) {
  std::string out = NumberCell(NumberAt(rate, "rate"));
  auto extracted = NumberAt(rate, "extracted"), total = NumberAt(rate, "total");
  if (extracted && total) {
    out += " <span class=\"ci\">(" + FormatNumber(*extracted) + "/" + FormatNumber(*total) + ")</span>";
  }
  return out;
}

// Keys of the objects in first-seen order (membership score names).
std::vector<std::string> UnionKeys(const std::vector<const Json*>& objects) {
  std::vector<std::string> keys;
  for (const Json* obj : objects) {
    if (obj == nullptr || !obj->is_object()) continue;
    for (const auto& item : obj->items()) {
      if (std::find(keys.begin(), keys.end(), item.key()) == keys.end()) keys.push_back(item.key());
    }
  }
  return keys;
}

// The same, numerically sorted (repetition counts such as "1", "4", "16").
std::vector<std::string> NumericKeys(const std::vector<const Json*>& objects) {
  std::vector<std::string> keys = UnionKeys(objects);
  std::stable_sort(keys.begin(), keys.end(), [](const std::string& a, const std::string& b) {
    return strtod(a.c_str(), nullptr) < strtod(b.c_str(), nullptr);
  });
  return keys;
}

const std::pair<const char*, const char*> kModels[] = {{"knn_lm", "kNN-LM"}, {"base_lm", "base LM"}};
const std::pair<const char*, const char*> kScores[] = {
    {"loss", "LOSS"}, {"zlib", "zlib ratio"}, {"reference", "reference ratio"}, {"min_k", "Min-K% (20%)"}};

std::string ScoreName(const std::string& key) {
  for (const auto& [k, name] : kScores) {
    if (key == k) return name;
  }
  return key;
}

// A score keeps its colour in every chart; scores this renderer does not know take the colours after them.
const char* ScoreColour(const std::string& key, const std::vector<std::string>& all_keys) {
  for (size_t i = 0; i < std::size(kScores); ++i) {
    if (key == kScores[i].first) return kPalette[i];
  }
  size_t at = std::find(all_keys.begin(), all_keys.end(), key) - all_keys.begin();
  return kPalette[std::min(std::size(kScores) + at, std::size(kPalette) - 1)];
}

// ---- Sections

std::string Section(const char* id, const char* title, const std::string& note, const std::string& body) {
  return std::string("<section id=\"") + id + "\"><h2>" + title + "</h2><p class=\"note\">" + note + "</p>" +
         (body.empty() ? "<p class=\"na\">Not measured in this report.</p>" : body) + "</section>\n";
}

// "<tr class="grp">" opens a model's group of rows (a rule above it).
std::string RowStart(bool first_of_group) { return first_of_group ? "<tr class=\"grp\">" : "<tr>"; }

std::string ConfigSection(const Json* config) {
  const char kNote[] = "The audit ran on a scratch copy of this state; the live state was not modified.";
  if (config == nullptr || !config->is_object()) return Section("config", "Configuration", kNote, "");
  const Json *knn = Get(config, "knn"), *state = Get(config, "state"), *model = Get(config, "model");
  auto get = [&](const char* key) { return Value(Get(config, key)); };
  const std::pair<const char*, std::string> rows[] = {
      {"Model", "<code>" + Value(Get(model, "path")) + "</code>"},
      {"Model fingerprint", "<code>" + Value(Get(model, "fingerprint")) + "</code>"},
      {"State", "<code>" + Value(Get(state, "dir")) + "</code>"},
      {"Stored facts / base entries", Value(Get(state, "facts")) + " / " + Value(Get(state, "base_entries"))},
      {"kNN-LM k, &lambda;, temperature",
       Value(Get(knn, "k")) + ", " + Value(Get(knn, "lambda")) + ", " + Value(Get(knn, "temperature"))},
      {"Seed", get("seed")},
      {"Canary format", "<code>" + get("canary_format") + "</code>"},
      {"Canaries &times; repetitions", get("canaries") + " &times; " + get("repetitions")},
      {"References per canary", get("references")},
      {"Exposure maximum (extrapolated / rank)",
       get("exposure_max_bits") + " / " + get("rank_exposure_max_bits") + " bits"},
      {"Members / non-members", get("members") + " / " + get("non_members")},
      {"Bootstrap resamples", get("bootstrap_resamples")},
      {"Extraction prefixes k / samples", get("extraction_prefixes") + " / " + get("extraction_samples")},
      {"Forgetting: facts added after", get("forgetting_added")},
      {"Started", get("started_at")},
      {"Run time", get("seconds") + " s"},
  };
  std::string body = "<dl class=\"kv\">";
  for (const auto& [key, value] : rows) body += std::string("<dt>") + key + "</dt><dd>" + value + "</dd>";
  return Section("config", "Configuration", kNote, body + "</dl>");
}

std::string ExpoCells(const Json* expo) {
  return "<td>" + NumberCell(NumberAt(expo, "mean_extrapolated")) + "</td><td>" +
         NumberCell(NumberAt(expo, "mean_rank")) + "</td>";
}

const std::pair<const char*, const char*> kPhases[] = {{"inserted", "inserted"},
                                                       {"never_inserted", "never inserted"},
                                                       {"after_deletion", "after deletion"},
                                                       {"rebuilt", "rebuilt"}};

// Per-canary extrapolated exposure as dots: a column per model and phase, a colour per repetition count.
std::string ExposureStripPlot(const Json* exposure, double max_bits) {
  struct Dots {
    const char* colour;
    const Json* expo;
  };
  struct Column {
    const char* label;
    std::vector<Dots> dots;
  };
  std::vector<std::pair<const char*, std::vector<Column>>> models;
  std::vector<std::string> reps;
  double y_max = max_bits;
  for (const auto& [key, name] : kModels) {
    const Json* m = GetObject(exposure, key);
    if (m == nullptr) continue;
    reps = NumericKeys({Get(m, "inserted"), Get(m, "after_deletion"), Get(m, "rebuilt")});
    std::vector<Column> columns;
    for (const auto& [phase, label] : kPhases) {
      Column column{label, {}};
      if (phase == std::string("never_inserted")) {
        column.dots.push_back({kGrey, Get(m, phase)});
      } else {
        for (size_t r = 0; r < reps.size(); ++r) {
          column.dots.push_back({kPalette[r % std::size(kPalette)], Get(Get(m, phase), reps[r])});
        }
      }
      for (const Dots& d : column.dots) {
        const Json* values = Get(d.expo, "extrapolated");
        for (const Json& v : values != nullptr && values->is_array() ? *values : Json::array()) {
          if (v.is_number() && std::isfinite(v.get<double>())) y_max = std::max(y_max, v.get<double>());
        }
      }
      columns.push_back(column);
    }
    models.push_back({name, columns});
  }
  if (models.empty()) return "";
  double top;
  std::vector<double> ticks = NiceTicks(y_max, &top);
  Plot plot(1000, 360, Scale{Scale::kLinear, 0, 4.0 * models.size()}, Scale{Scale::kLinear, 0, top});
  for (double t : ticks) plot.YTick(t, FormatNumber(t));
  size_t at = 0;
  for (const auto& [model_name, columns] : models) {
    if (at > 0) plot.Line(plot.X(at), plot.top(), plot.X(at), plot.bottom(), "class=\"sep\"");
    plot.Label((plot.X(at) + plot.X(at + columns.size())) / 2, plot.bottom() + 34, model_name, "middle", "at");
    for (const Column& column : columns) {
      plot.XTick(plot.X(at + 0.5), column.label, false);
      bool drawn = false;
      for (size_t g = 0; g < column.dots.size(); ++g) {
        double center = plot.X(at + 0.5) + (g - (column.dots.size() - 1) / 2.0) * 22;
        const Json* values = Get(column.dots[g].expo, "extrapolated");
        for (size_t i = 0; values != nullptr && values->is_array() && i < values->size(); ++i) {
          if (!(*values)[i].is_number() || !std::isfinite((*values)[i].get<double>())) continue;
          double jitter = (static_cast<double>(i % 5) - 2) * 2.5;  // deterministic; keeps equal values apart
          plot.Add("<circle" + At("cx", center + jitter) + At("cy", plot.Y((*values)[i].get<double>())) +
                   " r=\"3.8\" fill=\"" + column.dots[g].colour + "\" stroke=\"#fff\" stroke-width=\"0.8\"/>");
          drawn = true;
        }
        if (auto mean = NumberAt(column.dots[g].expo, "mean_extrapolated")) {
          plot.Line(center - 9, plot.Y(*mean), center + 9, plot.Y(*mean), "stroke=\"#1d2330\" stroke-width=\"2\"");
        }
      }
      if (!drawn) plot.Label(plot.X(at + 0.5), plot.bottom() - 8, "not measured", "middle", "vl");
      ++at;
    }
  }
  std::vector<LegendEntry> legend;
  for (size_t r = 0; r < reps.size(); ++r) {
    legend.push_back({"inserted " + reps[r] + "\u00d7", kPalette[r % std::size(kPalette)]});
  }
  legend.push_back({"never inserted", kGrey});
  legend.push_back({"mean", "#1d2330"});
  if (max_bits > 0) {
    plot.Line(plot.left(), plot.Y(max_bits), plot.right(), plot.Y(max_bits), "class=\"ref\"");
    legend.push_back({"maximum " + FormatNumber(max_bits) + " bits", kReferenceColour, true});
  }
  const double chance = 1 / std::log(2.0);  // expected exposure of a canary never inserted
  plot.Line(plot.left(), plot.Y(chance), plot.right(), plot.Y(chance), "class=\"chance\"");
  legend.push_back({"chance " + FormatNumber(chance) + " bits", kGrey, true});
  plot.Legend(legend);
  return Figure(plot.Render("", "extrapolated exposure (bits)", "Per-canary exposure before and after deletion"),
                "Per-canary extrapolated exposure; black bars are means.", true);
}

std::string ExposureSection(const Json& report) {
  const Json* exposure = Get(&report, "exposure");
  const Json* config = Get(&report, "config");
  double max_bits = NumberAt(config, "exposure_max_bits").value_or(0);
  std::string note =
      "Exposure is how many bits of a planted secret the model gives away: log<sub>2</sub> of how many of the "
      "possible secrets it finds less likely than the real one. A canary never inserted scores about 1.44 bits "
      "(chance); " +
      (max_bits > 0 ? FormatNumber(max_bits) + " bits" : std::string("the maximum")) +
      " means the secret is fully exposed. After deletion a canary should fall back to the never-inserted level, "
      "as on the memory rebuilt without it. The extrapolated estimate can reach the maximum; the rank estimate "
      "counts sampled references";
  if (auto rank_max = NumberAt(config, "rank_exposure_max_bits")) {
    note += " and stops at " + FormatNumber(*rank_max) + " bits";
  }
  note += ".";
  std::string rows;
  for (const auto& [key, name] : kModels) {
    const Json* m = GetObject(exposure, key);
    if (m == nullptr) continue;
    const Json *inserted = Get(m, "inserted"), *after = Get(m, "after_deletion"), *rebuilt = Get(m, "rebuilt");
    bool first = true;
    for (const std::string& r : NumericKeys({inserted, after, rebuilt})) {
      rows += RowStart(first) + "<td class=\"l\">" + (first ? name : "") + "</td><td class=\"l\">inserted " +
              Escape(r) + "&times;</td><td>" + NumberCell(NumberAt(Get(inserted, r), "count")) + "</td>" +
              ExpoCells(Get(inserted, r)) + ExpoCells(Get(after, r)) + ExpoCells(Get(rebuilt, r)) + "</tr>";
      first = false;
    }
    const Json* never = Get(m, "never_inserted");
    rows += RowStart(first) + "<td class=\"l\">" + (first ? name : "") +
            "</td><td class=\"l\">never inserted</td><td>" + NumberCell(NumberAt(never, "count")) + "</td>" +
            ExpoCells(never) + "<td colspan=\"4\" class=\"na c\">(nothing to delete)</td></tr>";
  }
  if (rows.empty()) return Section("exposure", "Exposure of canaries", note, "");
  std::string table =
      "<table><thead><tr><th class=\"l\" rowspan=\"2\">Model</th><th class=\"l\" rowspan=\"2\">Canaries</th>"
      "<th rowspan=\"2\">n</th><th colspan=\"2\">Before deletion</th><th colspan=\"2\">After deletion</th>"
      "<th colspan=\"2\">Rebuilt without them</th></tr><tr>"
      "<th>extrapolated</th><th>rank</th><th>extrapolated</th><th>rank</th><th>extrapolated</th><th>rank</th></tr>"
      "</thead><tbody>" +
      rows + "</tbody></table><p class=\"small\">Mean exposure in bits.</p>";
  return Section("exposure", "Exposure of canaries", note, table + ExposureStripPlot(exposure, max_bits));
}

// One model's ROC curves on log-log axes from axis_min to 1, as LiRA and ML Privacy Meter draw them.
std::string RocChart(const Json* model, const char* model_name, double axis_min) {
  Plot plot(500, 440, Scale{Scale::kLog, axis_min, 1}, Scale{Scale::kLog, axis_min, 1});
  for (double t = axis_min; t <= 1.0001; t *= 10) {
    plot.XTick(plot.X(t), FormatNumber(t), true);
    plot.YTick(t, FormatNumber(t));
  }
  plot.Line(plot.X(axis_min), plot.Y(axis_min), plot.X(1), plot.Y(1), "class=\"chance\"");
  std::vector<std::string> keys = UnionKeys({model});
  std::vector<LegendEntry> legend;
  for (const std::string& key : keys) {
    const Json* roc = Get(Get(model, key), "roc");
    std::vector<std::pair<double, double>> points;
    for (const Json& p : roc != nullptr && roc->is_array() ? *roc : Json::array()) {
      if (p.is_array() && p.size() == 2 && p[0].is_number() && p[1].is_number() && std::isfinite(p[0].get<double>()) &&
          std::isfinite(p[1].get<double>())) {
        points.push_back({p[0].get<double>(), p[1].get<double>()});
      }
    }
    if (points.empty()) continue;
    plot.Polyline(points, ScoreColour(key, keys));
    auto auc = NumberAt(Get(model, key), "auc");
    legend.push_back({ScoreName(key) + (auc ? " (AUC " + FormatNumber(*auc) + ")" : ""), ScoreColour(key, keys)});
  }
  if (legend.empty()) return "";
  legend.push_back({"chance", kGrey, true});
  plot.Legend(legend, /*inside_lower_right=*/true);
  return Figure(plot.Render("false-positive rate", "true-positive rate", std::string(model_name) + " ROC curves"),
                std::string(model_name) + ": ROC curves, log-log axes");
}

std::string MembershipSection(const Json& report) {
  const Json* membership = Get(&report, "membership");
  std::string note =
      "Can an attacker tell stored facts from similar facts that were never stored, from the model's scores "
      "alone? AUC 0.5 is a coin flip and 1 separates them perfectly. What matters for privacy is the "
      "true-positive rate at a very low false-positive rate: the share of stored facts an attacker identifies "
      "confidently while almost never accusing an unstored one. Log axes make that corner of the ROC curve "
      "visible; the dashed diagonal is chance. Brackets are 95% bootstrap intervals.";
  // The smallest non-zero FPR is 1/non-members; the axes start at the decade below it.
  double axis_min = 1e-3;
  if (auto non_members = NumberAt(membership, "non_members"); non_members && *non_members >= 1) {
    axis_min = std::clamp(std::pow(10, std::floor(std::log10(1 / *non_members) + 1e-9)), 1e-6, 1e-1);
  }
  std::string rows, charts;
  for (const auto& [key, name] : kModels) {
    const Json* m = GetObject(membership, key);
    if (m == nullptr) continue;
    bool first = true;
    for (const auto& item : m->items()) {
      rows += RowStart(first) + "<td class=\"l\">" + (first ? name : "") + "</td><td class=\"l\">" +
              Escape(ScoreName(item.key())) + "</td><td>" + WithInterval(&item.value(), "auc") + "</td><td>" +
              WithInterval(&item.value(), "tpr_at_0.1pct_fpr") + "</td><td>" +
              WithInterval(&item.value(), "tpr_at_1pct_fpr") + "</td></tr>";
      first = false;
    }
    charts += RocChart(m, name, axis_min);
  }
  if (rows.empty()) return Section("membership", "Membership inference", note, "");
  std::string body = "<p>" + Value(Get(membership, "members")) + " stored facts (members) against " +
                     Value(Get(membership, "non_members")) +
                     " held-out facts of the same distribution (non-members).</p>"
                     "<table><thead><tr><th class=\"l\">Model</th><th class=\"l\">Score</th><th>AUC</th>"
                     "<th>TPR at 0.1% FPR</th><th>TPR at 1% FPR</th></tr></thead><tbody>" +
                     rows + "</tbody></table>";
  return Section("membership", "Membership inference", note, body + "<div class=\"charts\">" + charts + "</div>");
}

std::string ExtractionSection(const Json& report) {
  const Json* extraction = Get(&report, "extraction");
  std::string note =
      "Does the model reproduce a stored fact verbatim when given its first k tokens (greedy decoding), or when "
      "sampling? Does it complete a canary's prefix with the secret? A rate of 1 means every stored fact can be "
      "read back out. The base LM has no datastore: it shows what the model would produce anyway.";
  const Json* knn = GetObject(extraction, "knn_lm");
  const Json* base = GetObject(extraction, "base_lm");
  if (knn == nullptr && base == nullptr) return Section("extraction", "Extraction", note, "");
  struct Measure {
    std::string label, bar_label;
    const Json *knn, *base;  // RATE-shaped objects
  };
  std::vector<Measure> measures;
  auto greedy = [](const Json* model) {
    const Json* rows = Get(model, "greedy");
    return rows != nullptr && rows->is_array() ? *rows : Json::array();
  };
  auto greedy_at = [](const Json& rows, double k) -> const Json* {
    for (const Json& row : rows) {
      if (NumberAt(&row, "k") == k) return &row;
    }
    return nullptr;
  };
  const Json knn_greedy = greedy(knn), base_greedy = greedy(base);
  std::vector<double> ks;
  for (const Json* rows : {&knn_greedy, &base_greedy}) {
    for (const Json& row : *rows) {
      auto k = NumberAt(&row, "k");
      if (k && std::find(ks.begin(), ks.end(), *k) == ks.end()) ks.push_back(*k);
    }
  }
  std::sort(ks.begin(), ks.end());
  for (double k : ks) {
    measures.push_back({"greedy, k = " + FormatNumber(k), "greedy k=" + FormatNumber(k), greedy_at(knn_greedy, k),
                        greedy_at(base_greedy, k)});
  }
  if (const Json* sampled = Get(knn, "sampled") != nullptr ? Get(knn, "sampled") : Get(base, "sampled")) {
    auto k = NumberAt(sampled, "k"), temperature = NumberAt(sampled, "temperature");
    measures.push_back(
        {"sampled, k = " + (k ? FormatNumber(*k) : "?") + ", T = " + (temperature ? FormatNumber(*temperature) : "?"),
         "sampled", Get(knn, "sampled"), Get(base, "sampled")});
  }
  for (const std::string& r : NumericKeys({Get(knn, "canary_secret"), Get(base, "canary_secret")})) {
    measures.push_back({"canary secret, inserted " + r + "\u00d7", "secret " + r + "\u00d7",
                        Get(Get(knn, "canary_secret"), r), Get(Get(base, "canary_secret"), r)});
  }
  std::string rows;
  std::vector<BarGroup> bars;
  for (const Measure& m : measures) {
    rows += "<tr><td class=\"l\">" + Escape(m.label) + "</td><td>" + RateCell(m.knn) + "</td><td>" + RateCell(m.base) +
            "</td></tr>";
    bars.push_back({m.bar_label, {NumberAt(m.knn, "rate"), NumberAt(m.base, "rate")}});
  }
  std::string body =
      "<table><thead><tr><th class=\"l\">Measure</th><th>kNN-LM</th><th>base LM</th></tr></thead><tbody>" + rows +
      "</tbody></table><p class=\"small\">Rate (extracted/total).</p>";
  body += Figure(GroupedBars(bars, {"kNN-LM", "base LM"}, 1, "extraction rate", "Extraction rates", 1000),
                 "Extraction rate per measure; &mdash; marks a rate not measured.", true);
  return Section("extraction", "Extraction", note, body);
}

// A verdict on a `matches` boolean: PASS with `pass`, FAIL with `fail`, or not measured.
std::string Badge(const Json* matches, const std::string& pass = "every score after deletion equals the rebuilt memory's, bit for bit",
                  const std::string& fail = "scores after deletion differ from the rebuilt memory's") {
  if (matches == nullptr || !matches->is_boolean()) return "<span class=\"badge unknown\">NOT MEASURED</span>";
  if (matches->get<bool>()) return "<span class=\"badge pass\">PASS</span> " + pass;
  return "<span class=\"badge fail\">FAIL</span> " + fail;
}

std::string DeletionSection(const Json& report) {
  const Json* audit = Get(&report, "deletion_audit");
  std::string note =
      "A deleted fact should leave the model exactly as if it had never been stored; the gold standard is a memory "
      "rebuilt from the database without it. PrivLeak (MUSE) = (AUC after deletion &minus; AUC rebuilt) / AUC "
      "rebuilt: 0 is perfect, positive means deleted facts are still detectable, negative that deletion left a "
      "trace of its own.";
  if (audit == nullptr || !audit->is_object()) return Section("deletion", "Deletion audit", note, "");
  const Json *before = Get(audit, "before"), *after = Get(audit, "after"), *rebuilt = Get(audit, "rebuilt");
  const Json *privleak = Get(audit, "privleak"), *deltas = Get(audit, "deltas");
  auto row = [](const std::string& label_html, std::optional<double> b, std::optional<double> a,
                std::optional<double> r, std::optional<double> delta, const std::string& privleak_cell) {
    if (!delta && a && r) delta = *a - *r;
    return "<tr><td class=\"l\">" + label_html + "</td><td>" + NumberCell(b) + "</td><td>" + NumberCell(a) +
           "</td><td>" + NumberCell(r) + "</td><td>" + NumberCell(delta) + "</td><td>" + privleak_cell + "</td></tr>";
  };
  std::string rows;
  std::vector<BarGroup> bars;
  const Json *auc_before = Get(before, "membership_auc"), *auc_after = Get(after, "membership_auc"),
             *auc_rebuilt = Get(rebuilt, "membership_auc");
  for (const std::string& s : UnionKeys({auc_before, auc_after, auc_rebuilt, privleak})) {
    auto b = NumberAt(auc_before, s), a = NumberAt(auc_after, s), r = NumberAt(auc_rebuilt, s);
    rows += row("membership AUC, " + Escape(ScoreName(s)), b, a, r, std::nullopt, NumberCell(NumberAt(privleak, s)));
    bars.push_back({ScoreName(s), {b, a, r}});
  }
  rows += row("mean extrapolated exposure (bits)", NumberAt(before, "exposure_mean_extrapolated"),
              NumberAt(after, "exposure_mean_extrapolated"), NumberAt(rebuilt, "exposure_mean_extrapolated"),
              NumberAt(deltas, "exposure_bits"), "");  // PrivLeak is defined on AUCs only
  rows += row("extraction rate", NumberAt(before, "extraction_rate"), NumberAt(after, "extraction_rate"),
              NumberAt(rebuilt, "extraction_rate"), NumberAt(deltas, "extraction_rate"), "");
  rows += "<tr><td class=\"l\">largest |log-prob difference|</td><td colspan=\"3\"></td><td>" +
          NumberCell(NumberAt(deltas, "max_abs_logprob")) + "</td><td></td></tr>";
  std::string body = "<p class=\"verdict\">" + Badge(Get(audit, "matches_rebuilt")) +
                     "</p><p>Deleted facts: " + Value(Get(audit, "deleted_facts")) +
                     ".</p><table><thead><tr><th class=\"l\">Measure</th><th>Before</th><th>After deletion</th>"
                     "<th>Rebuilt</th><th>After &minus; rebuilt</th><th>PrivLeak</th></tr></thead><tbody>" +
                     rows + "</tbody></table>";
  if (!bars.empty()) {
    body += Figure(GroupedBars(bars, {"before", "after deletion", "rebuilt"}, 1, "membership AUC",
                               "Membership AUC around deletion", 1000, std::make_pair(0.5, std::string("chance 0.5"))),
                   "Membership AUC per score before deletion, after it, and on the rebuilt memory.", true);
  }
  return Section("deletion", "Deletion audit", note, body);
}

std::string ParametricSection(const Json& report) {
  const Json* pvd = Get(&report, "parametric_vs_datastore");
  std::string note =
      "A datastore forgets by deletion; a model's weights do not. Canaries placed only in the datastore should lose "
      "their exposure when deleted, while canaries fine-tuned into the weights (training text) keep it: deleting "
      "from the datastore cannot remove what the weights learned.";
  const Json* placements = Get(pvd, "rows");
  const Json* finetune = GetObject(pvd, "finetune");
  if ((placements == nullptr || !placements->is_array() || placements->empty()) && finetune == nullptr) {
    return Section("parametric", "Parametric vs datastore", note, "");
  }
  std::string body;
  if (finetune != nullptr) {
    body += "<p>Fine-tuned scratch copy of the model: " + Value(Get(finetune, "steps")) + " steps, " +
            Value(Get(finetune, "tokens")) + " tokens, " + Value(Get(finetune, "seconds")) + " s, final loss " +
            Value(Get(finetune, "final_loss")) + "; each training-text canary repeated " +
            Value(Get(finetune, "canary_repetitions")) + " times.</p>";
  }
  std::string rows;
  std::vector<BarGroup> bars;
  for (const Json& r : placements != nullptr && placements->is_array() ? *placements : Json::array()) {
    std::string placement = Text(Get(&r, "placement"));
    std::string label = placement == "datastore"       ? "datastore only"
                        : placement == "training_text" ? "training text only"
                                                       : placement;
    rows += "<tr><td class=\"l\">" + Escape(label) + "</td><td>" + Value(Get(&r, "canaries")) + "</td>" +
            ExpoCells(Get(&r, "before")) + ExpoCells(Get(&r, "after_deletion")) + "<td>" +
            NumberCell(NumberAt(&r, "extraction_before")) + "</td><td>" +
            NumberCell(NumberAt(&r, "extraction_after_deletion")) + "</td><td>" +
            NumberCell(NumberAt(Get(&r, "base_lm"), "mean_extrapolated")) + "</td><td>" +
            NumberCell(NumberAt(Get(&r, "original_model"), "mean_extrapolated")) + "</td></tr>";
    bars.push_back({label,
                    {NumberAt(Get(&r, "before"), "mean_extrapolated"),
                     NumberAt(Get(&r, "after_deletion"), "mean_extrapolated"),
                     NumberAt(Get(&r, "base_lm"), "mean_extrapolated")}});
  }
  if (!rows.empty()) {
    body +=
        "<table><thead><tr><th class=\"l\" rowspan=\"2\">Canaries placed in</th><th rowspan=\"2\">n</th>"
        "<th colspan=\"2\">Exposure before</th><th colspan=\"2\">Exposure after deletion</th>"
        "<th colspan=\"2\">Extraction rate</th><th colspan=\"2\">Exposure without the datastore</th></tr>"
        "<tr><th>extrapolated</th><th>rank</th><th>extrapolated</th><th>rank</th><th>before</th>"
        "<th>after deletion</th><th>fine-tuned model</th><th>original model</th></tr></thead><tbody>" +
        rows + "</tbody></table>";
    std::optional<std::pair<double, std::string>> max_line;
    double max_bits = NumberAt(Get(&report, "config"), "exposure_max_bits").value_or(0);
    if (max_bits > 0) max_line = std::make_pair(max_bits, "maximum " + FormatNumber(max_bits) + " bits");
    body += Figure(GroupedBars(bars, {"kNN-LM before", "kNN-LM after deletion", "model alone"}, max_bits,
                               "mean extrapolated exposure (bits)", "Exposure by placement", 720, max_line),
                   "Mean extrapolated exposure by where the canaries were placed: under the kNN-LM before and "
                   "after the datastore canaries are deleted, and under the fine-tuned model without any datastore.");
  }
  return Section("parametric", "Parametric vs datastore", note, body);
}

// One measure of the forgetting curve against the facts added after the canaries, with the after-deletion
// point set apart at the right.
std::string ForgettingChart(const std::vector<std::pair<double, double>>& points, std::optional<double> deleted,
                            double y_max, const std::string& y_title) {
  double x_max = 1;
  for (const auto& p : points) {
    x_max = std::max(x_max, p.first);
    y_max = std::max(y_max, p.second);
  }
  if (deleted) y_max = std::max(y_max, *deleted);
  double top;
  std::vector<double> ticks = NiceTicks(y_max, &top);
  // Facts added grow geometrically (0, 100, 400, 1600): log10(1 + x / 100) spaces them about evenly.
  double unit = x_max;
  for (const auto& p : points) {
    if (p.first > 0) unit = std::min(unit, p.first);
  }
  Plot plot(500, 320, Scale{x_max > 8 * unit ? Scale::kLog1p : Scale::kLinear, 0, x_max, unit},
            Scale{Scale::kLinear, 0, top}, /*reserve_right=*/90);
  for (double t : ticks) plot.YTick(t, FormatNumber(t));
  for (const auto& p : points) plot.XTick(plot.X(p.first), FormatNumber(p.first), true);
  plot.Polyline(points, kPalette[0]);
  for (const auto& [x, y] : points) {
    plot.Add("<circle" + At("cx", plot.X(x)) + At("cy", plot.Y(y)) + " r=\"4\" fill=\"" + kPalette[0] + "\"/>");
  }
  double split = plot.X(x_max) + 40, deleted_x = plot.right() - 30;
  plot.Line(split, plot.top(), split, plot.bottom(), "class=\"sep\"");
  plot.XTick(deleted_x, "deleted", false);
  if (deleted) {
    double y = plot.Y(*deleted);
    plot.Add("<path d=\"M" + Printf("%.1f %.1f", deleted_x, y - 7) + "l7 7l-7 7l-7 -7z\" fill=\"" + kPalette[1] +
             "\"/>");
    plot.Label(deleted_x, y - 11, FormatNumber(*deleted), "middle", "vl");
  }
  return plot.Render("facts added after the canaries", y_title, y_title + " as facts are added, then after deletion");
}

std::string ForgettingSection(const Json& report) {
  const Json* forgetting = Get(&report, "forgetting");
  std::string note =
      "Does a stored secret fade as more facts are added after it? In a datastore it should not: retrieval finds "
      "it for as long as it is stored. Only deletion (the diamond at the right) should remove it.";
  const Json* points = Get(forgetting, "points");
  const Json* deleted = GetObject(forgetting, "after_deletion");
  if ((points == nullptr || !points->is_array() || points->empty()) && deleted == nullptr) {
    return Section("forgetting", "Forgetting", note, "");
  }
  std::string rows;
  std::vector<std::pair<double, double>> exposure, extraction;
  for (const Json& p : points != nullptr && points->is_array() ? *points : Json::array()) {
    auto added = NumberAt(&p, "added_after");
    auto bits = NumberAt(Get(&p, "exposure"), "mean_extrapolated");
    auto rate = NumberAt(&p, "extraction_rate");
    rows += "<tr><td class=\"l\">" + NumberCell(added) + "</td><td>" + NumberCell(bits) + "</td><td>" +
            NumberCell(NumberAt(Get(&p, "exposure"), "mean_rank")) + "</td><td>" + NumberCell(rate) + "</td></tr>";
    if (added && bits) exposure.push_back({*added, *bits});
    if (added && rate) extraction.push_back({*added, *rate});
  }
  rows += "<tr class=\"grp\"><td class=\"l\">after deletion</td><td>" +
          NumberCell(NumberAt(Get(deleted, "exposure"), "mean_extrapolated")) + "</td><td>" +
          NumberCell(NumberAt(Get(deleted, "exposure"), "mean_rank")) + "</td><td>" +
          NumberCell(NumberAt(deleted, "extraction_rate")) + "</td></tr>";
  double max_bits = NumberAt(Get(&report, "config"), "exposure_max_bits").value_or(1);
  std::string body =
      "<p>" + Value(Get(forgetting, "canaries")) +
      " canaries stored, then more facts added.</p><table><thead><tr><th class=\"l\">Facts added after</th>"
      "<th>Mean extrapolated exposure</th><th>Mean rank exposure</th><th>Extraction rate</th></tr></thead><tbody>" +
      rows + "</tbody></table><div class=\"charts\">" +
      Figure(ForgettingChart(exposure, NumberAt(Get(deleted, "exposure"), "mean_extrapolated"), max_bits,
                             "mean extrapolated exposure (bits)"),
             "Exposure of the stored canaries") +
      Figure(ForgettingChart(extraction, NumberAt(deleted, "extraction_rate"), 1, "extraction rate"),
             "Extraction rate of the stored canaries") +
      "</div>";
  return Section("forgetting", "Forgetting", note, body);
}

// Several series against the tokens read after the canaries, with the memory's capacity marked and the
// model alone as a dashed reference.
struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;
};

std::string MemoryChart(const std::vector<Series>& series, std::optional<double> reference, double capacity,
                        double y_max, const std::string& y_title) {
  double x_max = 1;
  for (const Series& s : series) {
    for (const auto& [x, y] : s.points) x_max = std::max(x_max, x), y_max = std::max(y_max, y);
  }
  if (reference) y_max = std::max(y_max, *reference);
  double top;
  std::vector<double> ticks = NiceTicks(y_max, &top);
  Plot plot(600, 340, Scale{Scale::kLinear, 0, x_max}, Scale{Scale::kLinear, 0, top});
  for (double t : ticks) plot.YTick(t, FormatNumber(t));
  if (!series.empty()) {
    for (const auto& p : series[0].points) plot.XTick(plot.X(p.first), FormatNumber(p.first), true);
  }
  std::vector<LegendEntry> legend;
  for (size_t i = 0; i < series.size(); ++i) {
    const char* colour = kPalette[i % 7];
    plot.Polyline(series[i].points, colour);
    for (const auto& [x, y] : series[i].points) {
      plot.Add("<circle" + At("cx", plot.X(x)) + At("cy", plot.Y(y)) + " r=\"" + (i == 0 ? "4.5" : "3") +
               "\" fill=\"" + colour + "\"/>");
    }
    legend.push_back({series[i].name, colour, false});
  }
  if (reference) {
    plot.Line(plot.left(), plot.Y(*reference), plot.right(), plot.Y(*reference), "class=\"ref\"");
    legend.push_back({"model alone", kReferenceColour, true});
  }
  if (capacity > 0 && capacity <= x_max) {
    plot.Line(plot.X(capacity), plot.top(), plot.X(capacity), plot.bottom(), "class=\"chance\"");
    plot.Label(plot.X(capacity) + 4, plot.top() + 12, "capacity", "start", "vl");
  }
  plot.Legend(legend);
  return plot.Render("tokens read after the canaries", y_title, y_title + " as the memory reads on");
}

// One deletion compared with its gold standard (the memory section's deletions, the base-datastore
// documents): verdict, what was deleted, and the measures before, after and on the gold standard.
std::string DeletionComparison(const Json& d, const std::string& heading, const std::string& gold_column,
                               const std::string& gold_phrase, const std::string& deleted_html) {
  std::string gold_lower = gold_column;
  for (char& c : gold_lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  const Json *before = Get(&d, "before"), *after = Get(&d, "after"), *rebuilt = Get(&d, "rebuilt");
  const Json* privleak = Get(&d, "privleak");
  auto row = [&](const std::string& label, const std::string& key, const Json* (*pick)(const Json*),
                 const std::string& privleak_cell) {
    auto b = NumberAt(pick(before), key), a = NumberAt(pick(after), key), r = NumberAt(pick(rebuilt), key);
    return "<tr><td class=\"l\">" + label + "</td><td>" + NumberCell(b) + "</td><td>" + NumberCell(a) +
           "</td><td>" + NumberCell(r) + "</td><td>" +
           NumberCell(a && r ? std::optional<double>(*a - *r) : std::nullopt) + "</td><td>" + privleak_cell +
           "</td></tr>";
  };
  std::string rows;
  const Json* auc = GetObject(before, "membership_auc");
  for (const std::string& score : UnionKeys({auc, privleak})) {
    rows += row("membership AUC, " + Escape(ScoreName(score)), score,
                [](const Json* phase) { return Get(phase, "membership_auc"); }, NumberCell(NumberAt(privleak, score)));
  }
  rows += row("mean extrapolated exposure (bits)", "mean_extrapolated",
              [](const Json* phase) { return Get(phase, "exposure"); }, "");
  rows += row("secret extraction rate", "extraction_rate", [](const Json* phase) { return phase; }, "");
  const std::string verdict =
      Badge(Get(&d, "matches_rebuilt"), "every score after deletion equals " + gold_phrase + ", bit for bit",
            "scores after deletion differ from " + gold_phrase + " (largest |log-prob difference| " +
                NumberCell(NumberAt(&d, "max_abs_logprob")) + ")");
  return "<h3>" + Escape(heading) + "</h3><p class=\"verdict\">" + verdict + "</p><p>" + deleted_html + " in " +
         Value(Get(&d, "delete_seconds")) + " s; verify-deleted passed for " +
         Value(Get(Get(&d, "verified"), "passed")) + " of " + Value(Get(Get(&d, "verified"), "documents")) +
         " canary documents.</p><table><thead><tr><th class=\"l\">Measure</th><th>Before</th><th>After deletion</th>"
         "<th>" + gold_column + "</th><th>After &minus; " + gold_lower +
         "</th><th>PrivLeak</th></tr></thead><tbody>" + rows + "</tbody></table>";
}

std::string MemorySection(const Json& report) {
  const Json* memory = GetObject(&report, "memory");
  std::string note =
      "Canaries read into a memory of the memorizing layer. A FIFO memory forgets by design: once the canaries "
      "have left its ring (after as many tokens as its capacity), the model must score exactly as with a memory that "
      "never read them. The kNN-LM datastore keeps the same canaries, stored as facts, until they are deleted. "
      "Deletion from a memory must leave it as a memory that read only the other documents.";
  if (memory == nullptr) return Section("memory", "Memory", note, "");
  const Json* measured = Get(memory, "measured");
  if (measured == nullptr || !measured->is_boolean() || !measured->get<bool>()) {
    return Section("memory", "Memory", note, "<p>Not measured: " + Escape(Text(Get(memory, "reason"))) + ".</p>");
  }
  const Json* forgetting = GetObject(memory, "forgetting");
  const Json* points = Get(forgetting, "points");
  std::string rows;
  Series exposure_read{"memory: read them", {}}, exposure_never{"memory: never did", {}},
      exposure_knn{"kNN-LM", {}};
  Series rate_read = exposure_read, rate_never = exposure_never, rate_knn = exposure_knn;
  auto add = [](Series* s, std::optional<double> x, std::optional<double> y) {
    if (x && y) s->points.push_back({*x, *y});
  };
  for (const Json& p : points != nullptr && points->is_array() ? *points : Json::array()) {
    auto x = NumberAt(&p, "read_after");
    const Json *m = Get(&p, "memory"), *n = Get(&p, "never_read"), *k = Get(&p, "knn_lm");
    add(&exposure_read, x, NumberAt(Get(m, "exposure"), "mean_extrapolated"));
    add(&exposure_never, x, NumberAt(Get(n, "exposure"), "mean_extrapolated"));
    add(&exposure_knn, x, NumberAt(Get(k, "exposure"), "mean_extrapolated"));
    add(&rate_read, x, NumberAt(m, "extraction_rate"));
    add(&rate_never, x, NumberAt(n, "extraction_rate"));
    add(&rate_knn, x, NumberAt(k, "extraction_rate"));
    const Json* same = Get(&p, "matches_never_read");
    rows += "<tr><td class=\"l\">" + NumberCell(x) + "</td><td>" + Value(Get(&p, "canary_tokens_resident")) +
            "</td><td>" + NumberCell(NumberAt(Get(m, "exposure"), "mean_extrapolated")) + "</td><td>" +
            NumberCell(NumberAt(Get(n, "exposure"), "mean_extrapolated")) + "</td><td>" +
            NumberCell(NumberAt(Get(k, "exposure"), "mean_extrapolated")) + "</td><td>" +
            NumberCell(NumberAt(m, "extraction_rate")) + "</td><td>" + NumberCell(NumberAt(k, "extraction_rate")) +
            "</td><td>" + (same != nullptr && same->is_boolean() ? (same->get<bool>() ? "yes" : "no") : kNotMeasured) +
            "</td></tr>";
  }
  const double capacity = NumberAt(memory, "capacity").value_or(0);
  const double max_bits = NumberAt(Get(&report, "config"), "exposure_max_bits").value_or(1);
  const Json* base = Get(forgetting, "base_lm");
  std::string body =
      "<p>Memorizing layer " + Value(Get(memory, "layer")) + ", top-" + Value(Get(memory, "topk")) +
      " retrieval; FIFO capacity " + Value(Get(memory, "capacity")) + " tokens; " +
      Value(Get(forgetting, "canaries")) + " canaries (" + Value(Get(forgetting, "canary_tokens")) +
      " tokens). The model alone: " + NumberCell(NumberAt(Get(base, "exposure"), "mean_extrapolated")) +
      " bits, secret extraction " + NumberCell(NumberAt(base, "extraction_rate")) +
      "; the kNN-LM after deleting the canary facts: " +
      NumberCell(NumberAt(Get(Get(forgetting, "knn_lm_after_deletion"), "exposure"), "mean_extrapolated")) +
      " bits.</p><table><thead><tr><th class=\"l\" rowspan=\"2\">Tokens read after</th>"
      "<th rowspan=\"2\">Canary tokens still in the ring</th><th colspan=\"3\">Mean extrapolated exposure (bits)</th>"
      "<th colspan=\"2\">Secret extraction rate</th><th rowspan=\"2\">Memory scores = never read, bit for bit</th></tr>"
      "<tr><th>memory</th><th>never read</th><th>kNN-LM</th><th>memory</th><th>kNN-LM</th></tr></thead><tbody>" +
      rows + "</tbody></table><div class=\"charts\">" +
      Figure(MemoryChart({exposure_read, exposure_never, exposure_knn},
                         NumberAt(Get(base, "exposure"), "mean_extrapolated"), capacity, max_bits,
                         "mean extrapolated exposure (bits)"),
             "Exposure of the canaries as the memory reads on: with the memory that read them, with one that read "
             "the same text but never them, under the kNN-LM that stores them as facts, and the model alone") +
      Figure(MemoryChart({rate_read, rate_never, rate_knn}, NumberAt(base, "extraction_rate"), capacity, 1,
                         "secret extraction rate"),
             "Secret extraction (greedy from the canary's prefix), the same four") +
      "</div>";
  const Json* deletion = Get(memory, "deletion");
  for (const Json& d : deletion != nullptr && deletion->is_array() ? *deletion : Json::array()) {
    const std::string policy = Text(Get(&d, "policy"));
    body += DeletionComparison(
        d, "Deletion from " + std::string(policy == "fifo" ? "a FIFO" : "an unbounded") + " memory", "Never read",
        "a memory's that never read the deleted documents",
        Value(Get(&d, "deleted_documents")) + " documents deleted (" + Value(Get(&d, "members")) + " members, " +
            Value(Get(&d, "canaries")) + " canaries; " + Value(Get(&d, "deleted_tokens")) + " tokens)");
  }
  return Section("memory", "Memory", note, body);
}

std::string DatastoreDocumentsSection(const Json& report) {
  const Json* section = Get(&report, "datastore_documents");
  const std::string note =
      "Documents a base datastore was built from can be deleted (mnemo datastore rm, DELETE "
      "/v1/datastore/documents/{id}). A scratch datastore is built from filler, member and canary documents; the "
      "members and canaries are deleted as documents and everything is measured again, and on a datastore built "
      "from the fillers alone from the start (the gold standard). PrivLeak as in the deletion audit.";
  if (section == nullptr || !section->is_object()) return Section("datastore", "Base datastore documents", note, "");
  if (!Get(section, "measured") || !Get(section, "measured")->is_boolean() || !Get(section, "measured")->get<bool>()) {
    return Section("datastore", "Base datastore documents", note,
                   "<p>Not measured: " + Escape(Text(Get(section, "reason"))) + ".</p>");
  }
  const std::string body = DeletionComparison(
      *section, "Deletion of documents from an " + Text(Get(section, "index")) + " datastore", "Rebuilt",
      "a datastore built without the deleted documents",
      Value(Get(section, "deleted_documents")) + " of " + Value(Get(section, "documents")) + " documents deleted (" +
          Value(Get(section, "members")) + " members, " + Value(Get(section, "canaries")) + " canaries; " +
          Value(Get(section, "deleted_entries")) + " of " + Value(Get(section, "entries")) + " entries)");
  return Section("datastore", "Base datastore documents", note, body);
}

const char kStyle[] = R"css(
body{margin:0;background:#eef0f3;color:#1d2330;
  font:14px/1.5 system-ui,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:20px 24px 40px}
header h1{font-size:26px;margin:8px 0 2px}
header p{margin:0;color:#4a5566}
nav{margin:10px 0 4px}nav a{color:#0b5cad;margin-right:14px;text-decoration:none}
section{background:#fff;border:1px solid #d8dde4;border-radius:8px;padding:14px 22px 18px;margin:16px 0}
h2{font-size:19px;margin:2px 0 8px}
p.note{background:#eef5fc;border-left:4px solid #7aa7d6;padding:8px 12px;margin:0 0 12px;color:#2b3444}
table{border-collapse:collapse;margin:6px 0;font-variant-numeric:tabular-nums}
th,td{padding:4px 12px;border-bottom:1px solid #e3e7ec;text-align:right;vertical-align:top}
th{background:#f3f5f8;font-weight:600;text-align:center}
th.l,td.l{text-align:left}td.c{text-align:center}
tr.grp td{border-top:2px solid #c9d0d9}
.ci{color:#6a7485;font-size:12px}
.na{color:#8c96a3}.small{font-size:12px;color:#6a7485;margin:2px 0 10px}
dl.kv{display:grid;grid-template-columns:max-content minmax(0,1.3fr) max-content minmax(0,1fr);gap:4px 18px;margin:0}
dt{color:#4a5566}dd{margin:0}
code{font:12.5px "DejaVu Sans Mono",Menlo,Consolas,monospace;overflow-wrap:anywhere}
.badge{display:inline-block;padding:2px 12px;margin-right:8px;border-radius:12px;font-weight:700;color:#fff}
.pass{background:#1a7f37}.fail{background:#cf222e}.unknown{background:#6e7781}
p.verdict{font-size:15px;margin:4px 0}
.charts{display:flex;flex-wrap:wrap;gap:12px 24px}
figure{margin:12px 0 0;flex:1 1 420px;max-width:560px}figure.wide{max-width:none}
figcaption{font-size:12px;color:#5a6476;text-align:center}
svg{display:block;width:100%;height:auto;font-size:12px;font-family:system-ui,"DejaVu Sans",Arial,sans-serif}
svg text{fill:#1d2330}svg .tk{fill:#4a5566;font-size:11px}svg .at{font-size:12px;fill:#2b3444}
svg .vl{font-size:10px;fill:#2b3444;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
svg .g{stroke:#e6e9ee}svg .ax{stroke:#4a5566;fill:none}svg .sep{stroke:#b8c0cb;stroke-dasharray:4 3}
svg .ref{stroke:#c2410c;stroke-dasharray:6 4;stroke-width:1.5}
svg .chance{stroke:#8c96a3;stroke-dasharray:5 4;stroke-width:1.5}
svg .lg{fill:#fff;fill-opacity:.9;stroke:#d8dde4}
)css";

}  // namespace

std::string RenderAuditHtml(const nlohmann::ordered_json& report) {
  const Json* config = Get(&report, "config");
  std::string format = Text(Get(&report, "format"));
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
      "<title>mnemo leakage audit</title><style>" +
      std::string(kStyle) + "</style></head><body><main>\n<header><h1>mnemo leakage audit</h1><p>Report format " +
      (format.empty() ? std::string(kNotMeasured) : Escape(format));
  if (!format.empty() && format != "mnemo-audit/1") out += " (not mnemo-audit/1: shown as far as it matches)";
  out += " &middot; started " + Value(Get(config, "started_at")) + " &middot; ran " + Value(Get(config, "seconds")) +
         " s &middot; &mdash; marks a value not measured.</p>"
         "<nav><a href=\"#config\">Configuration</a><a href=\"#exposure\">Exposure</a>"
         "<a href=\"#membership\">Membership</a><a href=\"#extraction\">Extraction</a>"
         "<a href=\"#deletion\">Deletion audit</a><a href=\"#parametric\">Parametric vs datastore</a>"
         "<a href=\"#forgetting\">Forgetting</a><a href=\"#memory\">Memory</a>"
         "<a href=\"#datastore\">Base datastore documents</a></nav></header>\n";
  out += ConfigSection(config) + ExposureSection(report) + MembershipSection(report) + ExtractionSection(report) +
         DeletionSection(report) + ParametricSection(report) + ForgettingSection(report) + MemorySection(report) +
         DatastoreDocumentsSection(report);
  return out + "</main></body></html>\n";
}

}  // namespace mnemo
