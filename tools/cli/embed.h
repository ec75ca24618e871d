// `mirad embed`: options and entry point.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace mirad::cli {

struct EmbedOptions {
  std::vector<std::string> inputs;
  std::string out;
  std::string backbone = "efficientnet_lite0";
  std::string taps = "stride8,stride16";
  std::string device = "cpu";
  int64_t batch = 16;
  std::string size = "256";
  std::string normalize;
  bool strict = false;
  bool no_smooth = false;
  std::string precision = "fp32";  // CUDA backbone arithmetic: fp32, tf32, fp16, bf16
  int64_t host_budget_mb = 0;
  int64_t device_budget_mb = 0;
  bool json = false;
};

// Registers the subcommand; *rc receives its exit status.
void add_embed_command(CLI::App& app, EmbedOptions& opt, int* rc);
int run_embed(const EmbedOptions& opt);

}  // namespace mirad::cli
