// Command-line front end: each file registers its subcommands on the CLI11 app. Commands return a
// process exit code; results go to stdout (JSON with --json), errors to stderr.
#pragma once

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "util/status.h"

namespace mnemo::cli {

// The command selected on the command line; main() runs it after parsing.
using Command = std::function<int()>;

using Json = nlohmann::ordered_json;

void RegisterLmCommands(CLI::App& app, Command* selected);         // cli_lm.cc
void RegisterInferenceCommands(CLI::App& app, Command* selected);  // cli_inference.cc
void RegisterDatastoreCommands(CLI::App& app, Command* selected);  // cli_datastore.cc
void RegisterFactCommands(CLI::App& app, Command* selected);       // cli_facts.cc
void RegisterServeCommand(CLI::App& app, Command* selected);       // cli_serve.cc
void RegisterAuditCommands(CLI::App& app, Command* selected);      // cli_audit.cc
void RegisterMemoryCommands(CLI::App& app, Command* selected);     // cli_memory.cc
void RegisterLogCommand(CLI::App& app, Command* selected);         // cli_log.cc

// The global --threads (0: automatic), as main() parsed it.
void SetThreadsFlag(int threads);
int ThreadsFlag();

// One line of JSON. Text from the model may end inside a UTF-8 sequence: such bytes become U+FFFD.
std::string DumpJson(const Json& j);

// Prints "mnemo: <status>" to stderr and returns the exit code for it (2 for invalid arguments,
// 1 otherwise).
int Fail(const Status& status);

}  // namespace mnemo::cli
