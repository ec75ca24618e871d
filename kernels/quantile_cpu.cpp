// CPU reference quantiles (exact, in double), the interpolation every backend shares, and the
// backend dispatch.
#include <algorithm>
#include <cmath>
#include <iterator>

#include "core/error.h"
#include "kernels/quantiles.h"

namespace mirad {

QuantilePosition quantile_position(int64_t n, double p) {
  // Written so that NaN fails it too.
  CHECK_INPUT(p >= 0.0 && p <= 1.0, "quantile probability {} is outside [0, 1]", p);
  CHECK_THROW(n > 0);
  const double h = static_cast<double>(n - 1) * p;
  // The clamp only guards against rounding at p = 1; floor(h) <= n-1 in exact arithmetic.
  const int64_t lo = std::min(static_cast<int64_t>(std::floor(h)), n - 1);
  return {lo, std::min(lo + 1, n - 1), h - static_cast<double>(lo)};
}

double interpolate_quantile(double x_lo, double x_hi, double frac) {
  // Exact order statistics come back untouched, and 0*Inf or Inf-Inf cannot arise from them.
  if (frac == 0.0 || x_lo == x_hi) return x_lo;
  // The formula would give -Inf + Inf = NaN here; the limit of the mix is -Inf.
  if (std::isinf(x_lo) && std::isfinite(x_hi)) return x_lo;
  return x_lo + frac * (x_hi - x_lo);
}

QuartileStats make_quartile_stats(double q1, double median, double q3, int64_t n_valid,
                                  int64_t n_nan) {
  QuartileStats stats;
  stats.q1 = q1;
  stats.median = median;
  stats.q3 = q3;
  stats.iqr = q1 == q3 ? 0.0 : q3 - q1;
  stats.n_valid = n_valid;
  stats.n_nan = n_nan;
  return stats;
}

namespace {

struct CpuQuantileResult {
  std::vector<double> values;
  int64_t n_valid = 0, n_nan = 0;
};

template <typename T>
CpuQuantileResult quantiles_cpu_impl(const T* x, int64_t n, const std::vector<double>& probs) {
  CHECK_INPUT(n >= 0, "score count {} is negative", n);
  CHECK_INPUT(n > 0, "quantiles of an empty score array");
  CHECK_THROW(x != nullptr);
  // Probabilities are checked before any work, so a bad one fails the same way on every input.
  for (double p : probs) quantile_position(1, p);

  // A copy, because selection reorders, and the caller's scores are never touched.
  std::vector<double> valid;
  valid.reserve(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(x[i])) valid.push_back(static_cast<double>(x[i]));
  CpuQuantileResult result;
  result.n_valid = static_cast<int64_t>(valid.size());
  result.n_nan = n - result.n_valid;
  CHECK_INPUT(result.n_valid > 0, "all {} scores are NaN", n);

  std::vector<QuantilePosition> positions;
  std::vector<int64_t> ranks;
  for (double p : probs) {
    positions.push_back(quantile_position(result.n_valid, p));
    ranks.push_back(positions.back().lo);
    ranks.push_back(positions.back().hi);
  }
  std::sort(ranks.begin(), ranks.end());
  ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
  // Ascending ranks: after placing rank r, everything from r+1 on is >= valid[r], so the next
  // selection only has to search that tail. A few linear passes instead of a full sort.
  auto first = valid.begin();
  for (int64_t r : ranks) {
    std::nth_element(first, valid.begin() + r, valid.end());
    first = valid.begin() + r + 1;
  }

  for (const QuantilePosition& pos : positions)
    result.values.push_back(interpolate_quantile(valid[pos.lo], valid[pos.hi], pos.frac));
  return result;
}

template <typename T>
QuartileStats quartiles_cpu_impl(const T* x, int64_t n) {
  const std::vector<double> probs(std::begin(kQuartileProbabilities),
                                  std::end(kQuartileProbabilities));
  CpuQuantileResult r = quantiles_cpu_impl(x, n, probs);
  return make_quartile_stats(r.values[0], r.values[1], r.values[2], r.n_valid, r.n_nan);
}

}  // namespace

QuartileStats quartiles_cpu(const float* x, int64_t n) {
  return quartiles_cpu_impl(x, n);
}
QuartileStats quartiles_cpu(const double* x, int64_t n) {
  return quartiles_cpu_impl(x, n);
}

std::vector<double> quantiles_cpu(const float* x, int64_t n, const std::vector<double>& probs) {
  return quantiles_cpu_impl(x, n, probs).values;
}
std::vector<double> quantiles_cpu(const double* x, int64_t n, const std::vector<double>& probs) {
  return quantiles_cpu_impl(x, n, probs).values;
}

#ifndef MIRAD_HAVE_CUDA
// kernels/quantile_cuda.cu is not compiled without CUDA; these keep every caller linking and
// fail the way parse_device does when CUDA is asked of a CPU-only build.
QuartileStats quartiles_cuda(const float*, int64_t, Stream, QuantileWorkspace&) {
  throw InputError("quartiles_cuda: this build has no CUDA backend");
}
QuartileStats quartiles_cuda(const float*, int64_t, Stream) {
  throw InputError("quartiles_cuda: this build has no CUDA backend");
}
#endif

QuartileStats quartiles(const float* x, int64_t n, Device device, Stream stream) {
  if (device == Device::cuda) return quartiles_cuda(x, n, stream);
  return quartiles_cpu(x, n);
}

}  // namespace mirad
