// The flow as a density: trained on a 2-D two-moons sample, its density must integrate to 1 on
// a grid and its held-out NLL must beat a fitted Gaussian.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/flow/flow.h"
#include "engine/flow/optimizer.h"

using namespace mirad;

namespace {

std::vector<double> two_moons(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, M_PI);
  std::normal_distribution<double> noise(0, 0.1);
  std::vector<double> x(2 * n);
  for (int64_t i = 0; i < n; ++i) {
    double t = u(rng);
    bool upper = i % 2 == 0;
    x[2 * i] = upper ? std::cos(t) : 1 - std::cos(t);
    x[2 * i + 1] = (upper ? std::sin(t) : 0.5 - std::sin(t)) + noise(rng);
    x[2 * i] += noise(rng);
  }
  return x;
}

// NLL of a Gaussian with the sample mean and covariance of `fit`, averaged over `eval`.
double gaussian_nll(const std::vector<double>& fit, const std::vector<double>& eval) {
  const int64_t n = fit.size() / 2;
  double m0 = 0, m1 = 0;
  for (int64_t i = 0; i < n; ++i) m0 += fit[2 * i], m1 += fit[2 * i + 1];
  m0 /= n, m1 /= n;
  double a = 0, b = 0, d = 0;
  for (int64_t i = 0; i < n; ++i) {
    double u = fit[2 * i] - m0, v = fit[2 * i + 1] - m1;
    a += u * u, b += u * v, d += v * v;
  }
  a /= n, b /= n, d /= n;
  const double det = a * d - b * b;
  double total = 0;
  const int64_t m = eval.size() / 2;
  for (int64_t i = 0; i < m; ++i) {
    double u = eval[2 * i] - m0, v = eval[2 * i + 1] - m1;
    double q = (d * u * u - 2 * b * u * v + a * v * v) / det;
    total += 0.5 * q + std::log(2 * M_PI) + 0.5 * std::log(det);
  }
  return total / m;
}

}  // namespace

TEST(FlowDensity, TwoMoonsIntegratesToOneAndBeatsGaussian) {
  FlowConfig cfg;
  cfg.dim = 2, cfg.cond_dim = 0, cfg.n_blocks = 8, cfg.hidden = 64, cfg.seed = 3;
  CouplingFlow<double> flow(cfg, Device::cpu);
  const int64_t n_train = 2000, n_test = 2000;
  auto train = two_moons(n_train, 1), test = two_moons(n_test, 2);
  MatrixView<const double> xt(train.data(), n_train, 2), xs(test.data(), n_test, 2);
  auto params = flow.init_params();
  flow.init_actnorm(params, xt, {});
  auto adam = make_optimizer<double>({{"type", "adam"}, {"lr", 5e-3}}, flow.n_params(),
                                     Device::cpu);
  Buffer<double> grad(flow.n_params(), Device::cpu);
  double first = 0, last = 0;
  for (int step = 0; step < 1500; ++step) {
    last = flow.forward(params, xt, {});
    if (step == 0) first = last;
    flow.backward(params, xt, {}, grad);
    adam->step(params.data(), grad.data(), flow.n_params());
  }
  EXPECT_LT(last, first - 0.5) << "training did not reduce the NLL";
  const double flow_test_nll = flow.forward(params, xs, {});
  const double gauss_test_nll = gaussian_nll(train, test);
  std::printf("held-out NLL: flow %.4f, fitted Gaussian %.4f\n", flow_test_nll, gauss_test_nll);
  EXPECT_LT(flow_test_nll, gauss_test_nll - 0.2);

  // Riemann sum of exp(-NLL) over a grid wide enough to hold all but a sliver of the mass.
  const double lo0 = -4, hi0 = 5, lo1 = -4, hi1 = 4.5, h = 0.02;
  const int64_t n0 = std::lround((hi0 - lo0) / h), n1 = std::lround((hi1 - lo1) / h);
  std::vector<double> grid(2 * n0 * n1);
  for (int64_t i = 0; i < n0; ++i)
    for (int64_t j = 0; j < n1; ++j) {
      grid[2 * (i * n1 + j)] = lo0 + (i + 0.5) * h;
      grid[2 * (i * n1 + j) + 1] = lo1 + (j + 0.5) * h;
    }
  std::vector<double> nll;
  flow.forward(params, MatrixView<const double>(grid.data(), n0 * n1, 2), {}, {}, &nll);
  double mass = 0;
  for (double v : nll) mass += std::exp(-v) * h * h;
  std::printf("density mass on the grid: %.4f\n", mass);
  EXPECT_NEAR(mass, 1.0, 0.02);
}
