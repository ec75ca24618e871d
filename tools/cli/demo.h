// `mirad demo` options and entry point.
#pragma once

#include <cstdint>
#include <string>

namespace mirad::cli {

struct DemoOptions {
  std::string device = "cpu";
  int64_t n_samples = 2000;
  int64_t dim = 16;
  double contamination = 0.1;
  int64_t steps = 300;
  int max_rounds = 5;
  double iqr_k = 1.5;
  double min_keep = 0.5;
  uint64_t seed = 0;
  bool json = false;
};

int run_demo(const DemoOptions& opt);

}  // namespace mirad::cli
