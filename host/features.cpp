// A job's features: the backbone run once over its images, or a checked `mirad embed` file; and
// their patch banks.
#include "host/features.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <set>

#include "core/error.h"
#include "engine/io/sha256.h"
#include "host/features_file.h"

namespace mirad {

namespace fs = std::filesystem;

Banks make_banks(const Features& f, int64_t cond_dim, Device device,
                 const std::vector<ChannelNorm>& norms, const std::vector<int64_t>& rows) {
  Banks b;
  for (size_t t = 0; t < f.shapes.size(); ++t) {
    b.owned.push_back(std::make_unique<PatchBank>(*f.cache, int(t), cond_dim, device,
                                                  norms.empty() ? ChannelNorm{} : norms[t],
                                                  Stream{}, rows.empty() ? f.usable : rows));
    b.ptrs.push_back(b.owned.back().get());
  }
  return b;
}

std::string effective_precision(const FeatureRequest& req) {
  parse_backbone_precision(req.settings.precision);  // refuses an unknown name
  return req.device == Device::cuda ? req.settings.precision : "fp32";
}

Features compute_features(const std::vector<fs::path>& images, const FeatureRequest& req,
                          const JobProgress& progress) {
  CHECK_INPUT(!images.empty(), "no images to embed");
  if (!req.features_file.empty()) return load_features_file(images, req, progress);
  const auto t0 = std::chrono::steady_clock::now();
  Features f;
  f.backbone_dir = resolve_backbone(req.settings.backbone);
  f.backbone.path = f.backbone_dir.string();
  f.backbone.weights_sha256 = sha256_file(f.backbone_dir / "weights.safetensors");
  if (!req.expected_weights_sha256.empty())
    CHECK_INPUT(f.backbone.weights_sha256 == req.expected_weights_sha256,
                "backbone {}: weights sha256 {} differ from the model's {} (the model was trained "
                "with other weights; pass --backbone with the original ones)",
                f.backbone_dir.string(), f.backbone.weights_sha256, req.expected_weights_sha256);
  FeatureExtractorOptions fo;
  fo.taps = req.settings.taps;
  fo.batch_size = req.settings.batch;
  fo.image_height = req.size.height, fo.image_width = req.size.width;
  fo.smooth = req.settings.smooth;
  fo.threads = req.threads;
  fo.backbone.precision = parse_backbone_precision(req.settings.precision);
  fo.normalize = req.normalize;
  fo.budget = req.budget;
  if (req.mean && req.std) {
    Normalization n;
    n.mean = *req.mean, n.std = *req.std;
    fo.normalization = n;
  }
  FeatureExtractor fx(f.backbone_dir, req.device, fo);
  f.backbone.name = fx.backbone().graph().model_name;
  f.backbone.input_height = req.size.height, f.backbone.input_width = req.size.width;
  f.backbone.mean = fx.preprocess().norm.mean;
  f.backbone.std = fx.preprocess().norm.std;
  f.backbone.smooth = req.settings.smooth;
  f.precision = effective_precision(req);
  f.tap_names = fx.tap_names();
  f.tap_ops = fx.tap_ops();
  f.shapes = fx.tap_shapes();
  f.cache = fx.extract(
      images,
      [&](int64_t done, int64_t total) {
        if (progress) progress("features", done, total, NAN);
      },
      req.strict ? nullptr : &f.failures);
  std::set<int64_t> bad;
  for (const auto& e : f.failures) bad.insert(e.index);
  for (int64_t i = 0; i < int64_t(images.size()); ++i)
    if (!bad.count(i)) f.usable.push_back(i);
  f.backbone_passes = fx.backbone_passes();
  std::sort(f.failures.begin(), f.failures.end(),
            [](const DecodeFailure& a, const DecodeFailure& b) { return a.index < b.index; });
  f.seconds = seconds_since(t0);
  return f;
}

}  // namespace mirad
