// mirad command-line entry point: parses the subcommand and dispatches.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "core/device.h"
#include "core/error.h"
#include "tools/cli/bench.h"
#include "tools/cli/contaminate.h"
#include "tools/cli/demo.h"
#include "tools/cli/embed.h"
#include "tools/cli/predict.h"
#include "tools/cli/synth.h"
#include "tools/cli/clean.h"
#include "tools/cli/train.h"

int main(int argc, char** argv) {
  CLI::App app{"mirad: robust anomaly detection engine"};
  app.require_subcommand(1);
  int rc = 0;
  mirad::cli::add_demo_command(app, &rc);
  mirad::cli::add_train_command(app, &rc);
  mirad::cli::add_clean_command(app, &rc);
  mirad::cli::add_predict_command(app, &rc);
  mirad::cli::add_eval_command(app, &rc);
  mirad::cli::add_info_command(app, &rc);
  mirad::cli::add_bench_command(app, &rc);
  mirad::cli::EmbedOptions embed;
  mirad::cli::add_embed_command(app, embed, &rc);
  mirad::cli::add_contaminate_command(app, &rc);
  mirad::cli::add_synth_command(app, rc);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports an unknown subcommand as "A subcommand is required"; name it instead.
    if (app.get_subcommands().empty() && argc > 1 && argv[1][0] != '-') {
      std::string known;
      for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
        known += (known.empty() ? "" : ", ") + sub->get_name();
      std::fprintf(stderr, "mirad: error: unknown subcommand '%s' (known: %s)\n", argv[1],
                   known.c_str());
      return 2;
    }
    // CLI11 prints its message and returns its own code (105 ValidationError, 106 Required,
    // 109 Extras...); like every other usage error here, those exit 2. --help stays 0.
    return app.exit(e) == 0 ? 0 : 2;
  } catch (const mirad::InputError& e) {
    std::fprintf(stderr, "mirad: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mirad: internal error: %s\n", e.what());
    return 3;
  }
  return rc;
}
