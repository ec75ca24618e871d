// `mirad synth` options, registration and entry point.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace mirad::cli {

struct SynthCliOptions {
  std::string out;
  std::vector<std::string> categories;
  int n_train = 100;
  int n_test_good = 20;
  int n_test_defect = 10;
  int size = 256;
  uint64_t seed = 0;
  std::string textures;
  bool procedural = false;
  bool contact_sheet = false;
  bool baseline = false;
  bool list = false;
  bool json = false;
  int threads = 0;
};

// Adds the `synth` subcommand to `app`; its exit status lands in `rc`.
void add_synth_command(CLI::App& app, int& rc);
int run_synth(const SynthCliOptions& opt);

}  // namespace mirad::cli
