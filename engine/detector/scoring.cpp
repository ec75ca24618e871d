// Scoring: patch NLLs under the flows, then the hybrid score and fused map (standardise,
// upsample, average, top-fraction and mean parts).
#include "engine/detector/scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/nvtx.h"
#include "kernels/quantiles.h"
#include "kernels/map_ops.h"

namespace mirad {

namespace {

template <typename T>
std::vector<double> finite_values(const std::vector<T>& v) {
  std::vector<double> out;
  out.reserve(v.size());
  for (T x : v)
    if (std::isfinite(x)) out.push_back(double(x));
  return out;
}

template <typename T>
RobustScale robust_scale_impl(const std::vector<T>& values) {
  const auto f = finite_values(values);
  RobustScale r;
  if (f.empty()) return r;
  const QuartileStats q = quartiles_cpu(f.data(), int64_t(f.size()));
  r.median = q.median;
  r.iqr = (std::isfinite(q.iqr) && q.iqr > 0) ? q.iqr : 1.0;
  return r;
}

}  // namespace

namespace {

Stream pick_stream(Device device, Stream given, const OwnedStream& own) {
  return device == Device::cuda && !given.handle ? own.get() : given;
}

}  // namespace

TapScorer::TapScorer(const FlowConfig& flow, Device device, Stream stream)
    : m_device(device),
      m_own_stream(device == Device::cuda && !stream.handle ? OwnedStream(device) : OwnedStream()),
      m_stream(pick_stream(device, stream, m_own_stream)), m_flow(flow, device, m_stream) {
  m_flow.set_checks(FlowChecks::none());
}

std::vector<float> TapScorer::score(VecView<const float> theta, const PatchBank& bank,
                                    const std::vector<int64_t>& images) {
  NVTX_RANGE("score");
  std::vector<float> out(images.size() * bank.hw());
  if (m_device == Device::cpu) {
    score_into(theta, bank, images, out.data());
    return out;
  }
  Buffer<float> nll(out.size(), m_device);
  score_into(theta, bank, images, nll.data());
  mem::copy(out.data(), Device::cpu, nll.data(), m_device, sizeof(float) * out.size(), m_stream);
  mem::synchronize(m_stream);
  return out;
}

void TapScorer::score_into(VecView<const float> theta, const PatchBank& bank,
                           const std::vector<int64_t>& images, float* out) {
  NVTX_RANGE("score_into");
  CHECK_INPUT(theta.size == m_flow.n_params() && theta.device == m_device,
              "scoring: parameters do not fit the flow");
  const int64_t hw = bank.hw(), max_images = bank.max_score_images();
  size_t i = 0;
  while (i < images.size()) {
    size_t j = i + 1;
    while (j < images.size() && int64_t(j - i) < max_images && images[j] == images[j - 1] + 1)
      ++j;
    const int64_t count = int64_t(j - i);
    // Nothing is read back; the copy is ordered after the forward on the stream, before the
    // next forward reuses the NLL buffer.
    m_flow.forward_async(theta, bank.image_rows(images[i], count), bank.image_condition(count));
    mem::copy(out + i * hw, m_device, m_flow.nll_device(), m_device,
              sizeof(float) * size_t(count * hw), m_stream);
    i = j;
  }
}

DeviceTapMaps score_maps_on_device(const ModelSet& model,
                                   const std::vector<const PatchBank*>& banks,
                                   const std::vector<int64_t>& images, Device device) {
  CHECK_INPUT(model.taps.size() == banks.size(), "scoring: model has {} taps, features have {}",
              model.taps.size(), banks.size());
  DeviceTapMaps maps;
  maps.n_images = int64_t(images.size());
  maps.device = device;
  for (size_t t = 0; t < banks.size(); ++t) {
    CHECK_INPUT(model.taps[t].flow.dim == banks[t]->channels(),
                "scoring: tap {} has {} channels, the model's flow {}", t, banks[t]->channels(),
                model.taps[t].flow.dim);
    // The scorer's own stream, so its forwards and the copies out of them stay ordered.
    TapScorer scorer(model.taps[t].flow, device);
    maps.grids.push_back({banks[t]->height(), banks[t]->width()});
    auto theta = Buffer<float>::from_host(model.taps[t].theta, device);
    maps.nll.emplace_back(size_t(maps.n_images * banks[t]->hw()), device);
    scorer.score_into(theta, *banks[t], images, maps.nll.back().data());
    // The scorer (and its stream) ends here: its work must be done.
    if (device == Device::cuda) mem::synchronize(scorer.stream());
  }
  return maps;
}

RobustScale robust_scale(const std::vector<double>& values) { return robust_scale_impl(values); }
RobustScale robust_scale(const std::vector<float>& values) { return robust_scale_impl(values); }

Grid fused_grid(const std::vector<Grid>& grids) {
  CHECK_INPUT(!grids.empty(), "scoring: no taps");
  Grid g = grids[0];
  for (const Grid& x : grids)
    if (x.size() > g.size()) g = x;
  return g;
}

void fuse_maps_on(const std::vector<Grid>& grids, const std::vector<const float*>& nll, int64_t n,
                  const std::vector<RobustScale>& taps, float* fused, Device d, Stream s) {
  const size_t T = grids.size();
  CHECK_INPUT(T > 0 && nll.size() == T && taps.size() == T,
              "scoring: {} tap grids, {} tap maps, {} tap scales", T, nll.size(), taps.size());
  const Grid g = fused_grid(grids);
  int64_t widest = 0;
  for (const Grid& gt : grids) widest = std::max(widest, gt.size());
  mem::zero(fused, d, sizeof(float) * size_t(n * g.size()), s);
  Buffer<float> standard(size_t(n * widest), d), up(size_t(n * g.size()), d);
  const float w = 1.0f / float(T);
  for (size_t t = 0; t < T; ++t) {
    const Grid& gt = grids[t];
    // NaN is the most anomalous value there is: carried on as +Inf (mapops::standardize).
    mapops::standardize(n * gt.size(), nll[t], taps[t].median, taps[t].iqr, standard.data(), d, s);
    const float* src = standard.data();
    if (gt.height != g.height || gt.width != g.width) {
      mapops::resize_bilinear(n, gt.height, gt.width, standard.data(), g.height, g.width,
                              up.data(), d, s);
      src = up.data();
    }
    mapops::accumulate(n * g.size(), w, src, fused, d, s);
  }
  // The scratch buffers are freed on return: the device must be done with them.
  if (d == Device::cuda) mem::synchronize(s);
}

std::vector<float> fuse_maps(const TapMaps& maps, const std::vector<RobustScale>& taps) {
  const size_t T = maps.grids.size();
  CHECK_INPUT(T > 0 && maps.nll.size() == T && taps.size() == T,
              "scoring: {} tap grids, {} tap maps, {} tap scales", T, maps.nll.size(),
              taps.size());
  const int64_t n = maps.n_images;
  std::vector<const float*> nll;
  for (size_t t = 0; t < T; ++t) {
    const Grid& gt = maps.grids[t];
    CHECK_INPUT(int64_t(maps.nll[t].size()) == n * gt.size(),
                "scoring: tap {} has {} values for {} images of {} x {}", t, maps.nll[t].size(),
                n, gt.height, gt.width);
    nll.push_back(maps.nll[t].data());
  }
  std::vector<float> fused(size_t(n) * fused_grid(maps.grids).size());
  fuse_maps_on(maps.grids, nll, n, taps, fused.data(), Device::cpu);
  return fused;
}

namespace {

int64_t top_count(double top_fraction, int64_t cells) {
  return std::clamp<int64_t>(int64_t(std::ceil(top_fraction * double(cells) - 1e-9)), 1, cells);
}

}  // namespace

void image_parts(const std::vector<float>& fused, int64_t n, int64_t cells, double top_fraction,
                 std::vector<double>& top, std::vector<double>& mean) {
  CHECK_INPUT(int64_t(fused.size()) == n * cells, "scoring: {} map values for {} x {}",
              fused.size(), n, cells);
  std::vector<float> t(n), m(n);
  mapops::row_topk_mean(n, cells, top_count(top_fraction, cells), fused.data(), t.data(),
                        m.data(), Device::cpu);
  top.assign(t.begin(), t.end());
  mean.assign(m.begin(), m.end());
}

std::vector<double> hybrid_scores(const std::vector<double>& top, const std::vector<double>& mean,
                                  const ScoreStats& stats, double weight) {
  std::vector<double> s(top.size());
  for (size_t i = 0; i < top.size(); ++i) {
    const double v = weight * stats.top.standardise(top[i]) +
                     (1.0 - weight) * stats.mean.standardise(mean[i]);
    s[i] = std::isfinite(v) ? v : std::numeric_limits<double>::infinity();
  }
  return s;
}

ScoreStats calibrate_scores(const TapMaps& maps, const ScoreSettings& settings,
                            std::vector<double>& scores) {
  ScoreStats st;
  for (const auto& nll : maps.nll) st.taps.push_back(robust_scale(nll));
  const auto fused = fuse_maps(maps, st.taps);
  const int64_t cells = fused_grid(maps.grids).size();
  std::vector<double> top, mean;
  image_parts(fused, maps.n_images, cells, settings.top_fraction, top, mean);
  st.top = robust_scale(top);
  st.mean = robust_scale(mean);
  const auto f = finite_values(fused);
  if (!f.empty()) {
    const auto q = quantiles_cpu(f.data(), int64_t(f.size()), {0.5, 0.999});
    st.map_lo = q[0];
    st.map_hi = q[1] > q[0] ? q[1] : q[0] + 1.0;
  }
  scores = hybrid_scores(top, mean, st, settings.weight);
  return st;
}

std::vector<double> score_images(const TapMaps& maps, const ScoreStats& stats,
                                 const ScoreSettings& settings, std::vector<float>* fused_out) {
  auto fused = fuse_maps(maps, stats.taps);
  std::vector<double> top, mean;
  image_parts(fused, maps.n_images, fused_grid(maps.grids).size(), settings.top_fraction, top,
              mean);
  auto s = hybrid_scores(top, mean, stats, settings.weight);
  if (fused_out) *fused_out = std::move(fused);
  return s;
}

std::vector<double> score_images(const DeviceTapMaps& maps, const ScoreStats& stats,
                                 const ScoreSettings& settings, Buffer<float>* fused_out,
                                 Stream s) {
  const size_t T = maps.grids.size();
  CHECK_INPUT(T > 0 && maps.nll.size() == T, "scoring: {} tap grids, {} tap maps", T,
              maps.nll.size());
  const int64_t n = maps.n_images, cells = fused_grid(maps.grids).size();
  const Device d = maps.device;
  std::vector<const float*> nll;
  for (size_t t = 0; t < T; ++t) {
    CHECK_INPUT(int64_t(maps.nll[t].size()) == n * maps.grids[t].size() &&
                    maps.nll[t].device() == d,
                "scoring: tap {} has {} values on {} for {} images of {} x {} on {}", t,
                maps.nll[t].size(), device_name(maps.nll[t].device()), n, maps.grids[t].height,
                maps.grids[t].width, device_name(d));
    nll.push_back(maps.nll[t].data());
  }
  Buffer<float> fused(size_t(n * cells), d), parts(size_t(2 * n), d);
  fuse_maps_on(maps.grids, nll, n, stats.taps, fused.data(), d, s);
  if (n > 0)
    mapops::row_topk_mean(n, cells, top_count(settings.top_fraction, cells), fused.data(),
                          parts.data(), parts.data() + n, d, s);
  const std::vector<float> h = parts.to_host(s);
  const std::vector<double> top(h.begin(), h.begin() + n), mean(h.begin() + n, h.end());
  if (fused_out) *fused_out = std::move(fused);
  return hybrid_scores(top, mean, stats, settings.weight);
}

}  // namespace mirad
