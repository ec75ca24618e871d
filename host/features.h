// A job's features: the backbone run once over its images (or a `mirad embed` file checked
// against them), kept in a FeatureCache; and the per-tap patch banks over them that training
// and scoring read.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backbone/feature_cache.h"
#include "engine/config/detector_config.h"
#include "engine/detector/detector_model.h"
#include "engine/training/patch_bank.h"
#include "host/feature_extractor.h"
#include "host/input_size.h"
#include "host/job_progress.h"

namespace mirad {

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
  int64_t backbone_passes = 0;     // images the backbone ran on to make them (0 from a file)
  std::string precision = "fp32";  // the backbone arithmetic that made them (CPU: always fp32)
};

// Features of `images`. InputError for a missing backbone, a backbone whose sha256 is not the
// expected one, or a features file that does not match (backbone, taps, input size, smoothing,
// image list, or any image's content hash: a stale cache is never used).
Features compute_features(const std::vector<std::filesystem::path>& images,
                          const FeatureRequest& request, const JobProgress& progress = {});


// The backbone arithmetic a request gets: features.precision on CUDA, FP32 on the CPU.
std::string effective_precision(const FeatureRequest& req);

// The banks of a features set (one per tap) over the cache rows `rows` (empty: its usable images).
struct Banks {
  std::vector<std::unique_ptr<PatchBank>> owned;
  std::vector<const PatchBank*> ptrs;
};

Banks make_banks(const Features& f, int64_t cond_dim, Device device,
                 const std::vector<ChannelNorm>& norms = {},
                 const std::vector<int64_t>& rows = {});

}  // namespace mirad
