// The product's jobs, independent of the command line: images -> features (once per image, or
// a saved `mirad embed` file that is checked against the images) -> refinement -> a detector
// model; and a predictor that scores new images with a saved model (scores, decisions, anomaly
// maps at each image's own resolution).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/config/detector_config.h"
#include "engine/detector/detector_model.h"
#include "engine/backbone/feature_cache.h"
#include "engine/detector/refinement.h"
#include "host/feature_extractor.h"

namespace mirad {

// phase ("features", "round 1 fold 2/4 tap 1/2", "scoring"), done, total, loss (NaN if none).
using JobProgress =
    std::function<void(const std::string& phase, int64_t done, int64_t total, double loss)>;

struct InputSize {
  int height = 0, width = 0;
};
// The backbone input for a set of images: the most common aspect ratio among them (headers
// only), short side `short_side`, long side rounded to keep the ratio (a 230 x 630 KSDD2 image
// becomes 256 x 701, not a square). Images of another aspect ratio are resized to it.
InputSize choose_input_size(const std::vector<std::filesystem::path>& images, int64_t short_side);

struct FeatureRequest {
  FeatureSettings settings;
  InputSize size;
  Device device = Device::cpu;
  int threads = 0;             // decode threads (0 = one per core)
  bool strict = false;         // an undecodable image stops the run (else skipped, reported)
  std::filesystem::path features_file;  // a `mirad embed` file to reuse instead of the backbone
  std::string normalize;       // a preset when the backbone's graph has none
  std::optional<std::array<double, 3>> mean, std;  // explicit normalisation (a model's)
  std::string expected_weights_sha256;              // a model's backbone identity
  CacheBudget budget;                               // where the feature cache may live
};

struct Features {
  std::filesystem::path backbone_dir;
  BackboneInfo backbone;
  std::vector<std::string> tap_names;
  std::vector<int> tap_ops;
  std::vector<FeatureTapShape> shapes;
  std::unique_ptr<FeatureCache> cache;  // rows = the input images, in order
  std::vector<int64_t> usable;          // images with features (all but `failures`)
  std::vector<DecodeFailure> failures;
  double seconds = 0;
  bool from_file = false;
  std::string precision = "fp32";  // the backbone arithmetic that made them (CPU: always fp32)
};

// Features of `images`. InputError for a missing backbone, a backbone whose sha256 is not the
// expected one, or a features file that does not match (backbone, taps, input size, smoothing,
// image list, or any image's content hash: a stale cache is never used).
Features compute_features(const std::vector<std::filesystem::path>& images,
                          const FeatureRequest& request, const JobProgress& progress = {});

// Metadata `mirad embed` writes so a features file can be checked before reuse.
std::map<std::string, std::string> features_metadata(const Features& f,
                                                     const std::vector<std::filesystem::path>& images,
                                                     const std::vector<std::string>& image_sha256);

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
  int resumed_from_round = -1;  // rounds a checkpoint had already done (-1: fresh start)
  // With TrainJob::checkpoint: the run's hold on that folder, kept while this result lives so
  // that the caller saves the model and removes the checkpoint before another run may start.
  std::shared_ptr<FolderLock> checkpoint_lock;
};

TrainResult run_train_job(const TrainJob& job, const JobProgress& progress = {});

struct Prediction {
  std::filesystem::path path;
  double score = 0;
  bool anomalous = false;
  std::string error;       // set when the image could not be decoded (score NaN)
  int height = 0, width = 0;
  std::vector<float> map;  // height x width fused map, smoothed (when maps were asked for)
};

class Predictor {
 public:
  // backbone: a folder or cache name to use instead of the model's recorded one; either way
  // its weights must have the model's sha256.
  Predictor(DetectorModel model, Device device, int threads, const std::string& backbone = {});
  const DetectorModel& model() const { return m_model; }
  std::vector<Prediction> predict(const std::vector<std::filesystem::path>& images, bool maps,
                                  bool strict, const JobProgress& progress = {}) const;

 private:
  DetectorModel m_model;
  Device m_device;
  int m_threads;
  std::string m_backbone;
};

// Applies the thread budget: compute libraries and decode threads (0 = every core).
int apply_thread_budget(int threads);

}  // namespace mirad
