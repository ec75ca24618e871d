// One training run from the command line (train, clean, demo): data + config -> refinement ->
// model, and its summary as text and JSON (rounds, rejections, cleaning precision/recall when
// the data's labels say which training images are contaminated).
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "engine/detector/clean_result.h"
#include "host/train_job.h"
#include "tools/cli/job_common.h"

namespace mirad::cli {

struct TrainingRun {
  LoadedData data;
  DetectorConfig config;
  TrainResult result;
  std::vector<std::string> contaminated;  // canonical paths of truly defective training images
  double seconds = 0;
};

struct TrainingRequest {
  DataOptions data;
  RunOptions run;
  std::string keep_list, reject_list;
  bool baseline = false;
  std::vector<std::filesystem::path> outputs;  // checked against the inputs before any work
  // Runs after those checks and before any work: where a subcommand creates its staged output
  // folders, so that an unwritable --out fails before the training rather than after it.
  std::function<void()> prepare_outputs;
};

TrainingRun run_training(const TrainingRequest& req);

// Cleaning figures against the labels (nullopt when the data carry none, e.g. plain images).
std::optional<CleaningFigures> cleaning_figures(const TrainingRun& run);
void print_rounds(const TrainingRun& run);
// "skipped (cannot decode): <path>: <reason>", one line per training image left out.
void print_skipped(const TrainingRun& run);

}  // namespace mirad::cli
