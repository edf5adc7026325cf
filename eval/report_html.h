// The HTML form of a leakage-audit report (report.json, format "mnemo-audit/1", docs/AUDIT.md): one
// self-contained HTML5 document with inline CSS and inline SVG charts, no scripts and no external URLs, so
// it opens offline and can be mailed or archived as one file.
//
// Sections: configuration, exposure, membership inference (log-log ROC curves), extraction, deletion
// audit, parametric vs datastore, forgetting; each with a plain-language note on how to read it. Rendering
// never fails: a section or value that is absent or of the wrong type shows as "not measured", and every
// string taken from the report (paths, keys, names) is HTML-escaped.
//
// Thread-safety: pure function.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mnemo {

std::string RenderAuditHtml(const nlohmann::ordered_json& report);

}  // namespace mnemo
