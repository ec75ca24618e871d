// `mirad demo`: generate, contaminate, clean, train and evaluate a small category.
#pragma once

#include <CLI/CLI.hpp>

namespace mirad::cli {

void add_demo_command(CLI::App& app, int* rc);

}  // namespace mirad::cli
