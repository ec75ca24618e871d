// The train job, independent of the command line: images -> features (once per image, or a
// saved `mirad embed` file that is checked against the images) -> refinement -> a detector model.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/config/detector_config.h"
#include "engine/detector/detector_model.h"
#include "engine/detector/refinement.h"
#include "host/feature_extractor.h"
#include "host/features.h"
#include "host/job_progress.h"

namespace mirad {

struct TrainJob {
  std::vector<std::filesystem::path> images;  // the (contaminated) training set
  std::vector<std::filesystem::path> keep;    // review: never reject these
  std::vector<std::filesystem::path> reject;  // review: exclude these
  DetectorConfig config;
  int threads = 0;
  bool strict = false;
  std::filesystem::path features_file;
  std::string normalize;
  bool baseline = false;  // also train a detector on every image, without rejection
  // Resumable: a folder for a checkpoint after every round; a run finding one there continues
  // from it (same config and images required) to the same result, bit for bit.
  std::filesystem::path checkpoint;
};

struct TrainResult {
  DetectorModel model;
  std::optional<DetectorModel> baseline;
  RefinementResult refinement;
  std::vector<std::filesystem::path> bank_images;  // refinement image ids index this
  std::vector<DecodeFailure> skipped;              // index into TrainJob::images
  double feature_seconds = 0, refine_seconds = 0;
  bool features_from_file = false;
  int64_t backbone_passes = 0;  // images the backbone ran on in this job (0 with a features file)
  // The job's features (rows = TrainJob::images), kept to the end of the job: evidence heatmaps
  // and reports score them again, so the backbone never runs twice on one image.
  std::shared_ptr<const Features> features;
  int resumed_from_round = -1;  // rounds a checkpoint had already done (-1: fresh start)
  // With TrainJob::checkpoint: the run's hold on that folder, kept while this result lives so
  // that the caller saves the model and removes the checkpoint before another run may start.
  std::shared_ptr<FolderLock> checkpoint_lock;
};

TrainResult run_train_job(const TrainJob& job, const JobProgress& progress = {});

}  // namespace mirad
