// mirad command-line entry point: parses the subcommand and dispatches.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "engine/device.h"
#include "engine/error.h"

int main(int argc, char** argv) {
  CLI::App app{"mirad: robust anomaly detection engine"};
  app.require_subcommand(1);
  auto* info = app.add_subcommand("info", "Print build and device information");
  info->callback([] {
    std::printf("mirad 0.1.0\ncuda compiled: %s\ncuda device: %s\n",
                mirad::cuda_compiled() ? "yes" : "no", mirad::cuda_available() ? "yes" : "no");
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const mirad::InputError& e) {
    std::fprintf(stderr, "mirad: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mirad: internal error: %s\n", e.what());
    return 3;
  }
  return 0;
}
