// mirad command-line entry point: parses the subcommand and dispatches.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "engine/device.h"
#include "engine/error.h"
#include "tools/cli/contaminate.h"
#include "tools/cli/demo.h"
#include "tools/cli/embed.h"
#include "tools/cli/synth.h"

int main(int argc, char** argv) {
  CLI::App app{"mirad: robust anomaly detection engine"};
  app.require_subcommand(1);
  auto* info = app.add_subcommand("info", "Print build and device information");
  info->callback([] {
    std::printf("mirad 0.1.0\ncuda compiled: %s\ncuda device: %s\n",
                mirad::cuda_compiled() ? "yes" : "no", mirad::cuda_available() ? "yes" : "no");
  });
  mirad::cli::DemoOptions demo;
  auto* demo_cmd = app.add_subcommand(
      "demo", "Run the core loop (flow training + IQR rejection rounds) on built-in synthetic "
              "contaminated features");
  demo_cmd->add_option("--device", demo.device, "cpu or cuda")->capture_default_str();
  demo_cmd->add_option("--samples", demo.n_samples, "number of feature vectors")
      ->check(CLI::Range(int64_t(50), int64_t(10000000)))->capture_default_str();
  demo_cmd->add_option("--dim", demo.dim, "feature dimension")
      ->check(CLI::Range(int64_t(2), int64_t(4096)))->capture_default_str();
  demo_cmd->add_option("--contamination", demo.contamination, "contaminated fraction")
      ->check(CLI::Range(0.0, 0.9))->capture_default_str();
  demo_cmd->add_option("--steps", demo.steps, "Adam steps per round")
      ->check(CLI::Range(int64_t(1), int64_t(1000000)))->capture_default_str();
  demo_cmd->add_option("--rounds", demo.max_rounds, "maximum refinement rounds")
      ->check(CLI::Range(1, 100))->capture_default_str();
  demo_cmd->add_option("--iqr-k", demo.iqr_k, "k in tau = Q3 + k*IQR")
      ->check(CLI::Range(0.0, 100.0))->capture_default_str();
  demo_cmd->add_option("--seed", demo.seed, "random seed")->capture_default_str();
  demo_cmd->add_flag("--json", demo.json, "machine-readable JSON on stdout, no progress bar");
  int rc = 0;
  demo_cmd->callback([&] { rc = mirad::cli::run_demo(demo); });
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
    return app.exit(e);
  } catch (const mirad::InputError& e) {
    std::fprintf(stderr, "mirad: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mirad: internal error: %s\n", e.what());
    return 3;
  }
  return rc;
}
