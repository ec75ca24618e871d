// Scoring, in one home for training (refinement's rounds and calibration) and prediction: the
// per-tap patch NLLs of images under a detector's flows (TapScorer, score_maps_on_device), and
// from them the hybrid image score and the fused anomaly map (DESIGN.md §5-7): per-tap patch
// NLLs are robust-standardised by their tap's median and IQR over retained training patches, upsampled
// to the finest tap grid and averaged; the image score mixes the robust-standardised mean of
// the map's top 1% and its mean. Every statistic comes from training data and is stored in the
// model, so a score never depends on which other images are scored with it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "engine/config/detector_config.h"
#include "engine/detector/model_set.h"
#include "engine/flow/flow.h"
#include "engine/training/cuda_graph.h"
#include "engine/training/patch_bank.h"

namespace mirad {

struct Grid {
  int64_t height = 0, width = 0;
  int64_t size() const { return height * width; }
};

// Robust location and scale: median and IQR (scale 1 when the IQR is 0 or not finite, so a
// degenerate tap or score part does not turn every value into Inf).
struct RobustScale {
  double median = 0, iqr = 1;
  double standardise(double x) const { return (x - median) / iqr; }
};

struct ScoreStats {
  std::vector<RobustScale> taps;  // patch NLL per tap
  RobustScale top, mean;          // image parts: top-fraction mean and mean of the fused map
  double map_lo = 0, map_hi = 1;  // colour scale of fused maps (median and 99.9th percentile
                                  // of retained training map values)
};

// Per-tap patch NLLs of n images: tap t holds [n * grids[t].size()] values, image-major.
struct TapMaps {
  std::vector<Grid> grids;
  std::vector<std::vector<float>> nll;
  int64_t n_images = 0;
};

// TapMaps left where the flows computed them (the device, for CUDA): tap t's NLLs are
// nll[t] = [n_images * grids[t].size()] on `device`, image-major. Scoring these reads back only
// the two image parts per image (and the fused maps when asked).
struct DeviceTapMaps {
  std::vector<Grid> grids;
  std::vector<Buffer<float>> nll;
  int64_t n_images = 0;
  Device device = Device::cpu;
};

// Per-position NLLs of whole images under one tap's flow. Always FP32: tensor-core precision
// (train.precision) is for training, so the calibration scores a threshold comes from and every
// later score use the same arithmetic, on any device. Nothing is checked: a non-finite NLL is
// kept (the most anomalous value), never an error.
class TapScorer {
 public:
  // CUDA without a stream: a stream of its own.
  TapScorer(const FlowConfig& flow, Device device, Stream stream = {});
  Stream stream() const { return m_stream; }
  // [images.size() * hw] on the host, image-major.
  std::vector<float> score(VecView<const float> theta, const PatchBank& bank,
                           const std::vector<int64_t>& images);
  // The same into out ([images.size() * hw] floats on the scorer's device) with nothing read
  // back: the whole-test-set pipeline keeps the NLLs where the flow computed them.
  void score_into(VecView<const float> theta, const PatchBank& bank,
                  const std::vector<int64_t>& images, float* out);

 private:
  Device m_device;
  OwnedStream m_own_stream;
  Stream m_stream;
  CouplingFlow<float> m_flow;
};

// Per-tap patch NLLs of images under a model (any images of the banks), left on `device`
// (DeviceTapMaps) for score_images() there.
DeviceTapMaps score_maps_on_device(const ModelSet& model,
                                   const std::vector<const PatchBank*>& banks,
                                   const std::vector<int64_t>& images, Device device);

// The grid of the fused map: the finest (largest) tap grid.
Grid fused_grid(const std::vector<Grid>& grids);

// Fused maps [n, fused grid] of the given images with the given tap scales.
std::vector<float> fuse_maps(const TapMaps& maps, const std::vector<RobustScale>& taps);
// The same on any device: nll[t] ([n, grids[t]]) and fused ([n, fused grid]) on d. Both
// backends standardise, resize and add with the same kernels' math (kernels/map_ops.h).
void fuse_maps_on(const std::vector<Grid>& grids, const std::vector<const float*>& nll, int64_t n,
                  const std::vector<RobustScale>& taps, float* fused, Device d, Stream s = {});

// The image parts: mean of the top ceil(top_fraction * cells) values (at least one) and the
// mean of each fused map. NaN counts as +Inf, the most anomalous value.
void image_parts(const std::vector<float>& fused, int64_t n, int64_t cells, double top_fraction,
                 std::vector<double>& top, std::vector<double>& mean);

// The hybrid score of each image: w * std(top) + (1 - w) * std(mean); +Inf when not finite.
std::vector<double> hybrid_scores(const std::vector<double>& top, const std::vector<double>& mean,
                                  const ScoreStats& stats, double weight);

// Robust scale of the finite values (NaN and Inf are left out: they are rejected on their own).
RobustScale robust_scale(const std::vector<double>& values);
RobustScale robust_scale(const std::vector<float>& values);

// Fits every statistic of ScoreStats on calibration maps (retained training images; out of
// fold with cross-fit) and returns the calibration images' hybrid scores in `scores`.
ScoreStats calibrate_scores(const TapMaps& maps, const ScoreSettings& settings,
                            std::vector<double>& scores);

// Scores (and optionally fused maps) of new images with fitted statistics.
std::vector<double> score_images(const TapMaps& maps, const ScoreStats& stats,
                                 const ScoreSettings& settings,
                                 std::vector<float>* fused = nullptr);
// The same from maps on their device: fusing, the top-fraction and mean parts run there; only
// 2 floats per image come back. fused, if given, receives the fused maps [n, fused grid] on the
// maps' device.
std::vector<double> score_images(const DeviceTapMaps& maps, const ScoreStats& stats,
                                 const ScoreSettings& settings, Buffer<float>* fused = nullptr,
                                 Stream s = {});

}  // namespace mirad
