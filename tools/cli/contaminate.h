// `mirad contaminate`: the SoftPatch contamination protocol from the command line.
#pragma once

namespace CLI {
class App;
}

namespace mirad::cli {
// Registers the subcommand; *rc receives its exit status.
void add_contaminate_command(CLI::App& app, int* rc);
}  // namespace mirad::cli
