// Hybrid score and fused map: standardise, upsample, average, top-fraction and mean parts.
#include "engine/scoring.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/error.h"
#include "engine/quantiles.h"
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

RobustScale robust_scale(const std::vector<double>& values) { return robust_scale_impl(values); }
RobustScale robust_scale(const std::vector<float>& values) { return robust_scale_impl(values); }

Grid fused_grid(const std::vector<Grid>& grids) {
  CHECK_INPUT(!grids.empty(), "scoring: no taps");
  Grid g = grids[0];
  for (const Grid& x : grids)
    if (x.size() > g.size()) g = x;
  return g;
}

std::vector<float> fuse_maps(const TapMaps& maps, const std::vector<RobustScale>& taps) {
  const size_t T = maps.grids.size();
  CHECK_INPUT(T > 0 && maps.nll.size() == T && taps.size() == T,
              "scoring: {} tap grids, {} tap maps, {} tap scales", T, maps.nll.size(),
              taps.size());
  const int64_t n = maps.n_images;
  const Grid g = fused_grid(maps.grids);
  std::vector<float> fused(size_t(n) * g.size(), 0.0f), standard, up(size_t(n) * g.size());
  for (size_t t = 0; t < T; ++t) {
    const Grid& gt = maps.grids[t];
    CHECK_INPUT(int64_t(maps.nll[t].size()) == n * gt.size(),
                "scoring: tap {} has {} values for {} images of {} x {}", t, maps.nll[t].size(),
                n, gt.height, gt.width);
    standard.resize(maps.nll[t].size());
    const double m = taps[t].median, s = taps[t].iqr;
    // NaN is the most anomalous value there is: carry it on as +Inf.
    for (size_t i = 0; i < standard.size(); ++i) {
      const float v = maps.nll[t][i];
      standard[i] = std::isnan(v) ? INFINITY : float((double(v) - m) / s);
    }
    const float* src = standard.data();
    if (gt.height != g.height || gt.width != g.width) {
      mapops::resize_bilinear(n, gt.height, gt.width, standard.data(), g.height, g.width,
                              up.data(), Device::cpu);
      src = up.data();
    }
    const float w = 1.0f / float(T);
    for (size_t i = 0; i < fused.size(); ++i) fused[i] += w * src[i];
  }
  return fused;
}

void image_parts(const std::vector<float>& fused, int64_t n, int64_t cells, double top_fraction,
                 std::vector<double>& top, std::vector<double>& mean) {
  CHECK_INPUT(int64_t(fused.size()) == n * cells, "scoring: {} map values for {} x {}",
              fused.size(), n, cells);
  const int64_t k =
      std::clamp<int64_t>(int64_t(std::ceil(top_fraction * double(cells) - 1e-9)), 1, cells);
  std::vector<float> t(n), m(n);
  mapops::row_topk_mean(n, cells, k, fused.data(), t.data(), m.data(), Device::cpu);
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

}  // namespace mirad
