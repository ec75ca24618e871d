// Thresholds: the IQR fence, the rejection rules (quartile, skew-adjusted, MAD, two-component
// mixture) and the decision threshold.
#include "engine/detector/threshold.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "kernels/quantiles.h"

namespace mirad {

namespace {

constexpr double kLog2Pi = 1.8378770664093453;

double log_normal(double x, double mean, double sd) {
  const double z = (x - mean) / sd;
  return -0.5 * z * z - std::log(sd) - 0.5 * kLog2Pi;
}

double log_sum_exp(double a, double b) {
  const double m = std::max(a, b);
  return m + std::log(std::exp(a - m) + std::exp(b - m));
}

RejectionThreshold iqr_rule(const std::vector<double>& x, double k) {
  const QuartileStats q = quartiles_cpu(x.data(), int64_t(x.size()));
  return {iqr_fence(q, k), fmt::format("Q3 + {}*IQR = {:.4g} + {}*{:.4g}", k, q.q3, k, q.iqr)};
}

}  // namespace

double iqr_fence(const QuartileStats& q, double k) { return q.q3 + k * q.iqr; }

double decision_threshold(const std::vector<double>& scores, const ThresholdSettings& t,
                          std::string* detail) {
  std::vector<double> f;
  for (double s : scores)
    if (std::isfinite(s)) f.push_back(s);
  CHECK_INPUT(!f.empty(), "threshold: every calibration score is NaN or Inf (the flow gives a "
              "non-finite NLL on every retained image)");
  if (t.rule == ThresholdRule::fpr) {
    const double q = quantiles_cpu(f.data(), int64_t(f.size()), {1.0 - t.target_fpr})[0];
    if (detail) *detail = fmt::format("{:.4g} quantile of retained scores = {:.4g}", 1.0 - t.target_fpr, q);
    return q;
  }
  const QuartileStats q = quartiles_cpu(f.data(), int64_t(f.size()));
  if (detail)
    *detail = fmt::format("Q3 + {}*IQR of retained scores = {:.4g} + {}*{:.4g}", t.k, q.q3, t.k,
                          q.iqr);
  return iqr_fence(q, t.k);
}

double medcouple(const std::vector<double>& in) {
  CHECK_INPUT(!in.empty(), "medcouple: no values");
  std::vector<double> s = in;
  std::sort(s.begin(), s.end());
  constexpr size_t kMax = 4096;
  if (s.size() > kMax) {
    std::vector<double> t(kMax);
    for (size_t i = 0; i < kMax; ++i) t[i] = s[(i * (s.size() - 1)) / (kMax - 1)];
    s = std::move(t);
  }
  const size_t n = s.size();
  const double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
  std::vector<double> up, down;  // x_j - m >= 0 (descending), x_i - m <= 0 (descending)
  for (size_t i = n; i-- > 0;)
    if (s[i] >= m) up.push_back(s[i] - m);
  for (size_t i = n; i-- > 0;)
    if (s[i] <= m) down.push_back(s[i] - m);
  // Values at the median itself belong to both sides; their pairs take the sign convention of
  // the definition (by position in the tied block), so ties do not bias the skewness.
  int64_t zeros = 0;
  for (double v : s) zeros += v == m;
  std::vector<double> h;
  h.reserve(up.size() * down.size());
  const int64_t up0 = int64_t(up.size()) - zeros;  // index of the first zero in `up`
  for (size_t a = 0; a < up.size(); ++a)
    for (size_t b = 0; b < down.size(); ++b) {
      const double zp = up[a], zm = down[b];
      if (zp == 0 && zm == 0) {
        const int64_t ia = int64_t(a) - up0, ib = int64_t(b);
        const int64_t d = (zeros - 1) - ia - ib;
        h.push_back(d > 0 ? 1.0 : d < 0 ? -1.0 : 0.0);
      } else {
        h.push_back((zp + zm) / (zp - zm));
      }
    }
  const size_t k = h.size() / 2;
  std::nth_element(h.begin(), h.begin() + k, h.end());
  if (h.size() % 2) return h[k];
  const double hi = h[k];
  const double lo = *std::max_element(h.begin(), h.begin() + k);
  return 0.5 * (lo + hi);
}

Mixture2 fit_mixture2(const std::vector<double>& x, int max_iterations) {
  const int64_t n = int64_t(x.size());
  CHECK_INPUT(n >= 4, "mixture: needs at least 4 values (got {})", n);
  std::vector<double> s = x;
  std::sort(s.begin(), s.end());
  double mean = 0, var = 0;
  for (double v : s) mean += v;
  mean /= n;
  for (double v : s) var += (v - mean) * (v - mean);
  var /= n;
  // Variance floor: a component collapsing onto one value would make the likelihood infinite.
  const double floor_sd = std::sqrt(std::max(var, 1e-300)) * 1e-3 + 1e-12;
  // Start from the lower three quarters and the top quarter: contaminants are the minority.
  Mixture2 m;
  const int64_t cut = std::clamp<int64_t>(int64_t(0.75 * n), 2, n - 2);
  auto moments = [&](int64_t lo, int64_t hi, double& mu, double& sd) {
    mu = 0;
    for (int64_t i = lo; i < hi; ++i) mu += s[i];
    mu /= double(hi - lo);
    double v = 0;
    for (int64_t i = lo; i < hi; ++i) v += (s[i] - mu) * (s[i] - mu);
    sd = std::max(std::sqrt(v / double(hi - lo)), floor_sd);
  };
  moments(0, cut, m.mean[0], m.sd[0]);
  moments(cut, n, m.mean[1], m.sd[1]);
  m.weight[0] = double(cut) / n, m.weight[1] = 1.0 - m.weight[0];
  std::vector<double> r(n);
  double prev = -INFINITY;
  for (int it = 0; it < max_iterations; ++it) {
    // E step: responsibility of the upper component, and the log-likelihood.
    double ll = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double a = std::log(m.weight[0]) + log_normal(s[i], m.mean[0], m.sd[0]);
      const double b = std::log(m.weight[1]) + log_normal(s[i], m.mean[1], m.sd[1]);
      const double l = log_sum_exp(a, b);
      r[i] = std::exp(b - l);
      ll += l;
    }
    m.log_likelihood = ll;
    m.iterations = it + 1;
    if (ll - prev < 1e-10 * std::abs(ll)) break;
    prev = ll;
    // M step.
    double w1 = 0, mu0 = 0, mu1 = 0;
    for (int64_t i = 0; i < n; ++i) w1 += r[i], mu1 += r[i] * s[i], mu0 += (1 - r[i]) * s[i];
    const double w0 = double(n) - w1;
    if (w1 < 1e-9 || w0 < 1e-9) break;  // one component took everything
    mu0 /= w0, mu1 /= w1;
    double v0 = 0, v1 = 0;
    for (int64_t i = 0; i < n; ++i)
      v0 += (1 - r[i]) * (s[i] - mu0) * (s[i] - mu0), v1 += r[i] * (s[i] - mu1) * (s[i] - mu1);
    m.mean[0] = mu0, m.mean[1] = mu1;
    m.sd[0] = std::max(std::sqrt(v0 / w0), floor_sd);
    m.sd[1] = std::max(std::sqrt(v1 / w1), floor_sd);
    m.weight[0] = w0 / n, m.weight[1] = w1 / n;
  }
  if (m.mean[1] < m.mean[0]) {
    std::swap(m.mean[0], m.mean[1]), std::swap(m.sd[0], m.sd[1]);
    std::swap(m.weight[0], m.weight[1]);
  }
  return m;
}

RejectionThreshold rejection_threshold(const std::vector<double>& x, RejectionRule rule,
                                       double k) {
  CHECK_INPUT(!x.empty(), "rejection: no finite scores");
  for (double v : x) CHECK_INPUT(std::isfinite(v), "rejection: score {} is not finite", v);
  if (rule == RejectionRule::iqr) return iqr_rule(x, k);
  if (rule == RejectionRule::adjusted) {
    const QuartileStats q = quartiles_cpu(x.data(), int64_t(x.size()));
    const double mc = medcouple(x);
    const double f = std::exp((mc >= 0 ? 3.0 : 4.0) * mc);
    return {q.q3 + k * f * q.iqr,
            fmt::format("Q3 + {}*exp({}*MC)*IQR = {:.4g} + {}*{:.3g}*{:.4g} (MC {:.3f})", k,
                        mc >= 0 ? 3 : 4, q.q3, k, f, q.iqr, mc)};
  }
  if (rule == RejectionRule::mad) {
    const double med = quartiles_cpu(x.data(), int64_t(x.size())).median;
    std::vector<double> dev(x.size());
    for (size_t i = 0; i < x.size(); ++i) dev[i] = std::abs(x[i] - med);
    const double mad = quartiles_cpu(dev.data(), int64_t(dev.size())).median;
    // 1.4826 * MAD estimates the standard deviation of a normal sample.
    const double tau = med + k * 1.4826 * mad;
    return {tau, fmt::format("median + {}*1.4826*MAD = {:.4g} + {}*1.4826*{:.4g}", k, med, k,
                             mad)};
  }
  if (rule == RejectionRule::gmm) {
    const int64_t n = int64_t(x.size());
    if (n < 8) return iqr_rule(x, k);
    const Mixture2 m = fit_mixture2(x);
    double mean = 0, var = 0;
    for (double v : x) mean += v;
    mean /= n;
    for (double v : x) var += (v - mean) * (v - mean);
    var /= n;
    const double ll1 = -0.5 * n * (std::log(2 * M_PI * std::max(var, 1e-300)) + 1.0);
    const double bic1 = -2 * ll1 + 2 * std::log(double(n));
    const double bic2 = -2 * m.log_likelihood + 5 * std::log(double(n));
    // Ashman's D: two components are distinct clusters when D > 2.
    const double ashman = std::abs(m.mean[1] - m.mean[0]) * std::sqrt(2.0) /
                          std::sqrt(m.sd[0] * m.sd[0] + m.sd[1] * m.sd[1]);
    const bool two = bic2 < bic1 - 10 && ashman > 2 && m.weight[1] <= 0.5;
    if (!two) {
      auto fb = iqr_rule(x, k);
      fb.detail = fmt::format("one cluster (BIC {:.1f} vs {:.1f}, D {:.2f}): {}", bic1, bic2,
                              ashman, fb.detail);
      return fb;
    }
    // The boundary: where the upper component becomes the more likely, between the means.
    auto upper_minus_lower = [&](double v) {
      return (std::log(m.weight[1]) + log_normal(v, m.mean[1], m.sd[1])) -
             (std::log(m.weight[0]) + log_normal(v, m.mean[0], m.sd[0]));
    };
    double lo = m.mean[0], hi = m.mean[1];
    if (upper_minus_lower(lo) >= 0) {
      hi = lo;
    } else {
      for (int i = 0; i < 200; ++i) {
        const double mid = 0.5 * (lo + hi);
        (upper_minus_lower(mid) < 0 ? lo : hi) = mid;
      }
    }
    return {hi, fmt::format("mixture boundary {:.4g} (lower {:.3g} +- {:.3g}, upper {:.3g} +- "
                            "{:.3g}, upper weight {:.3f}, D {:.2f})",
                            hi, m.mean[0], m.sd[0], m.mean[1], m.sd[1], m.weight[1], ashman)};
  }
  throw InputError(fmt::format("rejection: unknown rule {}", int(rule)));  // not a RejectionRule
}

}  // namespace mirad
