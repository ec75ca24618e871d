// The cleaning-result format that `mirad clean` writes beside the model it trains: clean.json
// (which images were rejected, with the evidence; the rounds; cleaning figures against labels
// when the data carry them; the config) and rejected.csv (path, score, round, threshold). A
// writer and a reader, so that the format has one definition.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config/detector_config.h"
#include "engine/detector/metrics.h"
#include "engine/detector/round_summary.h"

namespace mirad {

struct CleanRejection {
  std::string path;
  double score = 0;  // +Inf/NaN: a non-finite score (null in clean.json, "inf" in the CSV)
  int round = 0;     // 0: rejected by a person's review (--reject)
  double tau = 0;    // the round's threshold; NaN when it had none
  std::optional<double> weight;          // soft refinement only: the loss weight it was given
  std::string heatmap;                   // the evidence image, relative to the result folder
  std::optional<bool> truly_defective;   // when the data's labels say
};

struct SkippedImage {
  std::string path, error;  // a training image that could not be decoded, and why
};

// Rejections against the labels: how many of the contaminated images were found.
struct CleaningFigures {
  int64_t contaminated = 0, rejected = 0;
  metrics::Cleaning counts;  // tp = true rejections, fp = false rejections, fn = missed
};

struct CleanExport {
  std::string folder;
  int64_t images = 0;
  bool hardlinks = false;
};

struct CleanResult {
  std::string data, layout;  // the dataset as given (--data, --layout after "auto")
  int64_t images = 0, retained = 0;
  std::vector<CleanRejection> rejected;
  std::vector<SkippedImage> skipped;
  std::vector<std::string> nonfinite_loss_images;
  std::string stop_reason;  // "min_keep" also sets min_keep_reached in clean.json
  std::vector<RoundSummary> rounds;
  std::optional<CleaningFigures> cleaning;  // none for data without labels (null in the file)
  DetectorConfig config;
  std::string model = "model";  // the model folder, relative to the result folder
  double seconds = 0, feature_seconds = 0, refine_seconds = 0;
  std::optional<CleanExport> exported;
};

inline constexpr const char* kCleanFormat = "mirad-clean";

// Why an image was rejected, as clean.json says it.
std::string rejection_reason(const CleanRejection& r);

nlohmann::json to_json(const CleaningFigures& c);
nlohmann::json to_json(const std::optional<CleaningFigures>& c);  // null when there are none
CleaningFigures cleaning_figures_from_json(const nlohmann::json& j, const std::string& what);

nlohmann::json to_json(const CleanResult& r);
// InputError naming `what` when `j` is not a cleaning result this mirad reads.
CleanResult clean_result_from_json(const nlohmann::json& j, const std::string& what);
// rejected.csv: path,score,round,threshold (RFC 4180 quoting).
std::string rejected_csv(const CleanResult& r);

// clean.json and rejected.csv in `dir` (each written atomically).
void write_clean_result(const std::filesystem::path& dir, const CleanResult& r);
CleanResult read_clean_result(const std::filesystem::path& dir);
// True when `dir` holds a clean.json of this format (how a rerun knows the folder is ours).
bool is_clean_result(const std::filesystem::path& dir);

}  // namespace mirad
