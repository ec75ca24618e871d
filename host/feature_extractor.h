// FeatureExtractor: images -> backbone taps -> 3x3-smoothed per-position features in a
// FeatureCache. Decoding, host-to-device copies and the backbone overlap (BatchStreamer); each
// image passes through the backbone exactly once per job.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "engine/backbone/backbone.h"
#include "engine/backbone/feature_cache.h"
#include "host/resize.h"

namespace mirad {

class ThreadPool;
class BatchStreamer;

struct FeatureExtractorOptions {
  std::vector<std::string> taps = {"stride8", "stride16"};  // names from the graph, or op indices
  int64_t batch_size = 16;
  int ring_slots = 3;
  int image_size = 0;   // square input size; 0 = the graph's preprocess size (or 224)
  int image_height = 0, image_width = 0;  // both > 0: this input size instead (aspect kept)
  // A normalisation preset (host/resize.h) instead of the graph's preprocess block; a graph
  // without one needs it, since a guessed normalisation silently shifts every feature.
  std::string normalize;
  std::optional<Normalization> normalization;  // explicit values (a saved model's); first
  bool smooth = true;   // 3x3 average pool per tap (stride 1, borders averaged over the inside)
  int threads = 0;      // decode threads; 0 = one per core
  CacheBudget budget;
  BackboneOptions backbone;
};

struct DecodeFailure {
  int64_t index = 0;    // into the image list
  std::string message;
};

class FeatureExtractor {
 public:
  FeatureExtractor(const std::filesystem::path& backbone_dir, Device device,
                   const FeatureExtractorOptions& options = {});
  ~FeatureExtractor();

  // Runs every image through the backbone once. progress(done, total) after each batch. With
  // `failures`, an image that cannot be decoded is recorded there (its features are those of a
  // black image; the caller drops it) instead of stopping the run.
  std::unique_ptr<FeatureCache> extract(
      const std::vector<std::filesystem::path>& images,
      const std::function<void(int64_t, int64_t)>& progress = {},
      std::vector<DecodeFailure>* failures = nullptr);

  const std::vector<int>& tap_ops() const { return m_tap_ops; }
  const std::vector<std::string>& tap_names() const { return m_tap_names; }
  const std::vector<FeatureTapShape>& tap_shapes() const { return m_shapes; }
  const PreprocessOptions& preprocess() const { return m_pre; }
  const Backbone& backbone() const { return *m_backbone; }
  bool pinned() const;
  // Images this extractor has run through the backbone, over all its extract() calls: what
  // shows that a job's backbone runs once per image.
  int64_t backbone_passes() const { return m_backbone_passes; }

 private:
  Device m_device;
  FeatureExtractorOptions m_opt;
  PreprocessOptions m_pre;
  std::unique_ptr<ThreadPool> m_pool;
  std::unique_ptr<BatchStreamer> m_streamer;
  std::unique_ptr<Backbone> m_backbone;
  std::vector<int> m_tap_ops;
  std::vector<std::string> m_tap_names;
  std::vector<FeatureTapShape> m_shapes;
  int64_t m_backbone_passes = 0;
};

// Images run through the backbone by every FeatureExtractor of this process so far: a command's
// whole count, whichever of its parts ran the backbone (a job's own count is in its result).
int64_t backbone_passes_in_process();

// Image files under the given paths: files as given, directories searched recursively for
// .png/.jpg/.jpeg (any case), each directory's files sorted. InputError for a missing path or
// no images at all.
std::vector<std::filesystem::path> collect_images(const std::vector<std::filesystem::path>& paths);

// The user cache of converted models: $XDG_CACHE_HOME/mirad/models, else ~/.cache/mirad/models.
std::filesystem::path model_cache_dir();
// A backbone directory from a path holding graph.json, or a model name in model_cache_dir()
// (e.g. "efficientnet_lite0", made by tools/setup.sh). InputError saying how to get it.
std::filesystem::path resolve_backbone(const std::string& name_or_dir);

}  // namespace mirad
