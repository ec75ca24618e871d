// `mirad bench`: a JSON report of decode, backbone, flow, MAML, quantile and clean-job speeds.
#pragma once

#include <CLI/CLI.hpp>

namespace mirad::cli {

void add_bench_command(CLI::App& app, int* rc);

}  // namespace mirad::cli
