// Small file-system helpers shared by every layer: whole-file reads and crash-safe writes.
//
// WriteFileAtomically writes to "<path>.tmp.<pid>", fsyncs it, renames it over `path` and fsyncs the
// directory, so after a crash a reader sees either the old file or the complete new one. The writes go
// through CurrentFileSystem() (util/file_system.h), so tests can inject faults into every caller.
#pragma once

#include <string>
#include <string_view>

#include "util/status.h"

namespace mnemo {

Status ReadFileToString(const std::string& path, std::string* out);
Status WriteFileAtomically(const std::string& path, std::string_view data);
// Creates `dir` and its parents if missing.
Status EnsureDirectory(const std::string& dir);
bool FileExists(const std::string& path);
// Unlinks `path` (absent is fine) and fsyncs its directory, so the removal survives a crash; a failed
// directory fsync is an error.
Status RemoveFileDurably(const std::string& path);

}  // namespace mnemo
