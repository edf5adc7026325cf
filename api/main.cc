// mnemo: a server for memory-augmented language models. One binary, many subcommands.
#include <torch/torch.h>

#include <cstdio>
#include <exception>

#include "api/cli.h"

namespace mnemo::cli {

int Fail(const Status& status) {
  fprintf(stderr, "mnemo: %s\n", status.ToString().c_str());
  return status.IsInvalidArgument() ? 2 : 1;
}

}  // namespace mnemo::cli

int main(int argc, char** argv) {
  CLI::App app{"mnemo: a language model with explicit, editable memory (kNN-LM, facts, leakage audits)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mnemo 0.1.0");
  mnemo::cli::Command selected;
  mnemo::cli::RegisterLmCommands(app, &selected);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return selected ? selected() : 0;
  } catch (const c10::Error& e) {
    fprintf(stderr, "mnemo: internal error in LibTorch: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    fprintf(stderr, "mnemo: internal error: %s\n", e.what());
  }
  return 1;
}
