// `mirad train` and `mirad clean`: refinement on a contaminated training set, writing a
// detector model (train) or a cleaning result with evidence and the model (clean).
#pragma once

#include <CLI/CLI.hpp>

namespace mirad::cli {

void add_train_command(CLI::App& app, int* rc);
void add_clean_command(CLI::App& app, int* rc);

}  // namespace mirad::cli
