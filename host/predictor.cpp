// Scoring new images with a saved model: features, scores and decisions, and anomaly maps at
// each image's own resolution.
#include "host/predictor.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "host/features.h"
#include "host/image.h"
#include "kernels/map_ops.h"

namespace mirad {

namespace fs = std::filesystem;

Predictor::Predictor(DetectorModel model, Device device, int threads, const std::string& backbone)
    : m_model(std::move(model)), m_device(device), m_threads(threads), m_backbone(backbone) {}

std::vector<Prediction> Predictor::predict(const std::vector<fs::path>& images, bool maps,
                                           bool strict, const JobProgress& progress) const {
  CHECK_INPUT(!images.empty(), "no images to score");
  const DetectorModel& m = m_model;
  FeatureRequest req;
  req.settings = m.config.features;
  if (!m_backbone.empty()) req.settings.backbone = m_backbone;
  req.size = {int(m.backbone.input_height), int(m.backbone.input_width)};
  req.device = m_device;
  req.threads = m_threads;
  req.strict = strict;
  req.mean = m.backbone.mean;
  req.std = m.backbone.std;
  req.expected_weights_sha256 = m.backbone.weights_sha256;
  Features f = compute_features(images, req, progress);
  for (size_t t = 0; t < f.shapes.size(); ++t)
    CHECK_INPUT(f.shapes[t].channels == m.taps[t].channels && f.shapes[t].height == m.taps[t].height &&
                    f.shapes[t].width == m.taps[t].width,
                "model/backbone mismatch: tap {} gives {} x {} x {}, the model has {} x {} x {}",
                m.taps[t].name, f.shapes[t].channels, f.shapes[t].height, f.shapes[t].width,
                m.taps[t].channels, m.taps[t].height, m.taps[t].width);
  // config.json records each tap's op beside its name; the graph resolves the name, so an op
  // that differs is an edited file or another graph, never to be ignored (issue 13, 13).
  for (size_t t = 0; t < f.tap_ops.size(); ++t)
    CHECK_INPUT(f.tap_ops[t] == m.taps[t].op,
                "model: taps[{}].op is {} but the backbone's tap '{}' is op {} (config.json was "
                "edited, or the backbone is another graph)", t, m.taps[t].op,
                m.config.features.taps[t], f.tap_ops[t]);
  std::vector<Prediction> out(images.size());
  for (size_t i = 0; i < images.size(); ++i) out[i].path = images[i], out[i].score = NAN;
  for (const auto& e : f.failures) out[e.index].error = e.message;
  if (f.usable.empty()) return out;
  std::vector<fs::path> usable_paths;
  for (int64_t i : f.usable) usable_paths.push_back(images[i]);
  std::vector<Prediction> scored = predict_features(f, f.usable, usable_paths, maps, progress);
  for (size_t b = 0; b < scored.size(); ++b) out[f.usable[b]] = std::move(scored[b]);
  return out;
}

std::vector<Prediction> Predictor::predict_features(const Features& f,
                                                    const std::vector<int64_t>& rows,
                                                    const std::vector<fs::path>& paths, bool maps,
                                                    const JobProgress& progress) const {
  CHECK_INPUT(!rows.empty() && rows.size() == paths.size(),
              "predict_features: {} rows and {} paths", rows.size(), paths.size());
  const DetectorModel& m = m_model;
  std::vector<Prediction> out(rows.size());
  for (size_t b = 0; b < rows.size(); ++b) out[b].path = paths[b], out[b].score = NAN;
  std::vector<ChannelNorm> norms;
  ModelSet ms;
  for (const auto& t : m.taps) norms.push_back(t.norm), ms.taps.push_back(t.params);
  Banks banks = make_banks(f, m.config.flow.cond_dim, m_device, norms, rows);
  std::vector<int64_t> ids(rows.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t(i);
  if (progress) progress("scoring", 0, int64_t(ids.size()), NAN);
  // The whole test set is scored where its features are: on CUDA the NLLs, the fused maps and
  // the image parts stay on the device, and only scores (and finished maps) come back.
  const DeviceTapMaps tm = score_maps_on_device(ms, banks.ptrs, ids, m_device);
  Buffer<float> fused;
  const auto scores = score_images(tm, m.stats, m.config.score, &fused);
  const Grid g = fused_grid(tm.grids);
  Buffer<float> up(0, m_device), blurred(0, m_device);
  for (size_t b = 0; b < ids.size(); ++b) {
    Prediction& p = out[b];
    p.score = scores[b];
    p.anomalous = !(scores[b] <= m.threshold);  // NaN/Inf are anomalous
    if (!maps) continue;
    const ImageInfo info = read_image_info(p.path);
    p.height = info.height, p.width = info.width;
    const size_t cells = size_t(p.height) * p.width;
    up.reserve_discard(cells);
    mapops::resize_bilinear(1, g.height, g.width, fused.data() + b * g.size(), p.height, p.width,
                            up.data(), m_device);
    // Smoothing scales with the image: map_sigma px at a 256-px short side.
    const double sigma = m.config.score.map_sigma * double(std::min(p.height, p.width)) / 256.0;
    const float* done = up.data();
    if (sigma > 0) {
      blurred.reserve_discard(cells);
      mapops::gaussian_blur(1, p.height, p.width, float(sigma), up.data(), blurred.data(),
                            m_device);
      done = blurred.data();
    }
    p.map.resize(cells);
    mem::copy(p.map.data(), Device::cpu, done, m_device, sizeof(float) * cells, {});
    if (m_device == Device::cuda) mem::synchronize({});
  }
  if (progress) progress("scoring", int64_t(ids.size()), int64_t(ids.size()), NAN);
  return out;
}

}  // namespace mirad
