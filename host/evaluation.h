// Evaluating a detector on a labelled test split: scores and maps from a Predictor, then image
// AUROC, pixel AUROC and AUPRO at each mask's own resolution, F1-max, F1 and the false-positive
// rate of good images at the model's threshold, per defect type AUROC; optionally the same on
// a subset (the common test subset no contamination ratio moves, DESIGN.md §8).
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/dataset.h"
#include "host/job_progress.h"
#include "host/predictor.h"

namespace mirad {

struct EvalMetrics {
  int64_t images = 0, good = 0, defect = 0, masks = 0, failed = 0;
  double image_auroc = NAN, pixel_auroc = NAN, aupro = NAN;
  double f1_max = NAN, f1_max_threshold = NAN;
  double f1_at_threshold = NAN, precision_at_threshold = NAN, recall_at_threshold = NAN;
  double good_fpr_at_threshold = NAN;  // good test images scored above the threshold
  std::map<std::string, double> auroc_by_defect;  // each defect type against all good images
  std::string eval_resolution = "mask";  // pixel metrics at each mask's own resolution
  nlohmann::json to_json() const;
};

struct EvalReport {
  EvalMetrics all;
  std::optional<EvalMetrics> subset;
  std::vector<Prediction> predictions;  // in test-split order
  std::vector<Item> items;
  double threshold = 0;
  double seconds = 0;
};

// `subset`: image paths (of the test split) to report separately; empty = none. Pixel metrics
// are skipped (NaN) when no defect image has a mask.
EvalReport evaluate(const Predictor& predictor, const std::vector<Item>& test,
                    const std::vector<std::filesystem::path>& subset, bool strict,
                    const JobProgress& progress = {});

}  // namespace mirad
