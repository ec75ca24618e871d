// How a subcommand is registered: its options live in one shared struct that the parser fills,
// and its run function's return value becomes mirad's exit status.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <utility>

namespace mirad::cli {

// The subcommand `name` with its help text and examples (footer), running run(options) into
// *rc; the caller adds the options to the returned command, bound to the returned struct.
template <typename Options>
std::pair<CLI::App*, std::shared_ptr<Options>> add_subcommand_running(
    CLI::App& app, const std::string& name, const std::string& description,
    const std::string& footer, int* rc, int (*run)(const Options&)) {
  auto options = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand(name, description);
  cmd->footer(footer);
  cmd->callback([options, rc, run] { *rc = run(*options); });
  return {cmd, options};
}

}  // namespace mirad::cli
