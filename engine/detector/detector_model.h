// The trained detector on disk: a folder with config.json (every hyperparameter, the backbone
// id and sha256, the input size and normalisation, every scoring statistic, the threshold, the
// retained and rejected files, a schema version) and flow.safetensors (per tap theta_0 and the
// adapted theta). config.json names the flow file's sha256, so a half-replaced or mismatched
// pair is refused rather than loaded.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/config/detector_config.h"
#include "engine/flow/flow_config.h"
#include "engine/io/output_dir.h"
#include "engine/training/patch_bank.h"
#include "engine/detector/refinement.h"
#include "engine/detector/scoring.h"

namespace mirad {

struct BackboneInfo {
  std::string name;             // graph model name
  std::string path;             // the folder it was loaded from (informational)
  std::string weights_sha256;   // of weights.safetensors: the identity that is checked
  int64_t input_height = 0, input_width = 0;
  std::array<double, 3> mean{0, 0, 0}, std{1, 1, 1};  // normalisation on the 0..1 scale
  bool smooth = true;
};

struct TapModel {
  std::string name;
  int op = 0;
  int64_t channels = 0, height = 0, width = 0;
  ChannelNorm norm;
  TapParams params;
};

struct RejectedFile {
  std::string path;
  int round = 0;
  double score = 0, tau = 0, weight = 0;
};

struct DetectorModel {
  static constexpr int kSchemaVersion = 1;
  DetectorConfig config;
  BackboneInfo backbone;
  std::vector<TapModel> taps;
  ScoreStats stats;
  double threshold = 0;
  std::string threshold_detail;
  std::vector<std::string> retained;
  std::vector<RejectedFile> rejected;
  nlohmann::json training = nlohmann::json::object();  // rounds, timings, stop reason (report)

  std::vector<Grid> grids() const;
};

// Writes <dir>/config.json and <dir>/flow.safetensors into a fresh sibling folder, then renames
// it into place (engine/io/output_dir.h): a reader sees the old model or the new one, never a mix.
// An existing <dir> is replaced only when it is a mirad model (its config.json says so) holding
// nothing else; anything else is refused, naming the files that would be lost.
void save_detector(const std::filesystem::path& dir, const DetectorModel& model);
// What save_detector will refuse, checked up front (before hours of training): an empty path,
// a missing or unwritable parent folder (with the system's reason), an existing path that is
// not a mirad model folder or holds other files.
void check_model_output(const std::filesystem::path& dir);
// The two files of a model, written into the existing folder `dir` (a StagedDir's, which the
// caller commits): for subcommands that stage the folder before their work.
void write_detector_files(const std::filesystem::path& dir, const DetectorModel& model);
// What a model folder holds, for outputs that contain one (clean's model/).
OutputKind model_output_kind();
// InputError naming the folder and the problem: missing files, another format or schema
// version, unknown keys, a flow file whose sha256 differs from the one recorded, tensors that
// do not fit the recorded flows, non-finite parameters.
DetectorModel load_detector(const std::filesystem::path& dir);

}  // namespace mirad
