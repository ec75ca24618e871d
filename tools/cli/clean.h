// `mirad clean`: which training images are suspect, with evidence (heatmaps), plus the detector
// trained without them. The dataset is never modified.
#pragma once

#include <CLI/CLI.hpp>

namespace mirad::cli {

void add_clean_command(CLI::App& app, int* rc);

}  // namespace mirad::cli
