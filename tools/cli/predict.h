// `mirad predict`, `mirad eval` and `mirad info`.
#pragma once

#include <CLI/CLI.hpp>

namespace mirad::cli {

void add_predict_command(CLI::App& app, int* rc);
void add_eval_command(CLI::App& app, int* rc);
void add_info_command(CLI::App& app, int* rc);

}  // namespace mirad::cli
