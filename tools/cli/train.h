// `mirad train`: refinement on a contaminated training set, writing a detector model.
#pragma once

#include <CLI/CLI.hpp>

namespace mirad::cli {

void add_train_command(CLI::App& app, int* rc);

}  // namespace mirad::cli
