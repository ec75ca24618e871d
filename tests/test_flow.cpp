// Coupling flow on the CPU: invertibility, log-det against the brute-force Jacobian, gradients
// and Hessian-vector products against float64 central differences, and bad-input errors.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "engine/flow/flow.h"
#include "flow_test_util.h"

using namespace mirad;
using mirad::test::randn;
using mirad::test::random_params;
using mirad::test::rel_error;

namespace {

FlowConfig small_config(int64_t D = 5, int64_t C = 4, int64_t K = 3, int64_t H = 7) {
  return mirad::test::flow_config(D, C, K, H, 11);
}

template <typename V>
auto mat(V&& v, int64_t rows, int64_t cols) {
  return mirad::test::cpu_mat(v, rows, cols);
}

// Mean NLL at params p (host vector), for finite differences.
double mean_nll(CouplingFlow<double>& flow, const std::vector<double>& p,
                const std::vector<double>& x, const std::vector<double>& c, int64_t N) {
  auto pb = Buffer<double>::from_host(p, Device::cpu);
  const int64_t C = flow.config().cond_dim;
  return flow.forward(pb, mat(x, N, flow.config().dim), C ? mat(c, N, C) : MatrixView<const double>{});
}

std::vector<double> gradient(CouplingFlow<double>& flow, const std::vector<double>& p,
                             const std::vector<double>& x, const std::vector<double>& c,
                             int64_t N) {
  auto pb = Buffer<double>::from_host(p, Device::cpu);
  const int64_t C = flow.config().cond_dim;
  auto cv = C ? mat(c, N, C) : MatrixView<const double>{};
  auto xv = mat(x, N, flow.config().dim);
  flow.forward(pb, xv, cv);
  Buffer<double> g(p.size(), Device::cpu);
  flow.backward(pb, xv, cv, g);
  return g.to_host();
}

}  // namespace

template <typename T>
class FlowInvertibility : public ::testing::Test {};
using Scalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(FlowInvertibility, Scalars);

TYPED_TEST(FlowInvertibility, XToZToX) {
  using T = TypeParam;
  const double tol = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  for (int64_t D : {2, 7, 64}) {
    FlowConfig cfg = small_config(D, 6, 8, 0);
    CouplingFlow<T> flow(cfg, Device::cpu);
    auto params = random_params(flow, 3, 0.05);
    const int64_t N = 37;
    auto x = randn<T>(N * D, 5);
    auto c = randn<T>(N * 6, 6);
    std::vector<T> z(N * D), x2(N * D);
    flow.forward(params, mat(x, N, D), mat(c, N, 6), mat(z, N, D));
    flow.inverse(params, mat(z, N, D), mat(c, N, 6), mat(x2, N, D));
    EXPECT_LT(rel_error(x2, x), tol) << "D=" << D;
    // The flow must actually move the data, or this test proves nothing.
    EXPECT_GT(rel_error(z, x), 0.05) << "D=" << D;
  }
}

TEST(Flow, LogDetMatchesBruteForceJacobian) {
  for (int64_t D : {2, 3, 8}) {
    FlowConfig cfg = small_config(D, 4, 4, 9);
    CouplingFlow<double> flow(cfg, Device::cpu);
    auto params = random_params(flow, 21, 0.4);
    auto x = randn<double>(D, 8);
    auto c = randn<double>(4, 9);
    std::vector<double> z(D), nll;
    flow.forward(params, mat(x, 1, D), mat(c, 1, 4), mat(z, 1, D), &nll);
    // log|det J| recovered from the NLL: NLL = 0.5|z|^2 + D/2 log(2 pi) - log|det J|.
    double sq = 0;
    for (double v : z) sq += v * v;
    const double log_det = 0.5 * sq + 0.5 * D * std::log(2 * M_PI) - nll[0];
    // Brute force: the full D x D Jacobian by central differences, then LU with pivoting.
    const double h = 1e-6;
    std::vector<double> J(D * D);
    for (int64_t j = 0; j < D; ++j) {
      auto xp = x, xm = x;
      xp[j] += h, xm[j] -= h;
      std::vector<double> zp(D), zm(D);
      flow.forward(params, mat(xp, 1, D), mat(c, 1, 4), mat(zp, 1, D));
      flow.forward(params, mat(xm, 1, D), mat(c, 1, 4), mat(zm, 1, D));
      for (int64_t i = 0; i < D; ++i) J[i * D + j] = (zp[i] - zm[i]) / (2 * h);
    }
    double brute = 0;
    for (int64_t col = 0; col < D; ++col) {
      int64_t piv = col;
      for (int64_t r = col + 1; r < D; ++r)
        if (std::abs(J[r * D + col]) > std::abs(J[piv * D + col])) piv = r;
      for (int64_t k = 0; k < D; ++k) std::swap(J[col * D + k], J[piv * D + k]);
      brute += std::log(std::abs(J[col * D + col]));
      for (int64_t r = col + 1; r < D; ++r) {
        double f = J[r * D + col] / J[col * D + col];
        for (int64_t k = col; k < D; ++k) J[r * D + k] -= f * J[col * D + k];
      }
    }
    EXPECT_NEAR(log_det, brute, 1e-7 * std::max(1.0, std::abs(brute))) << "D=" << D;
    EXPECT_GT(std::abs(log_det), 1e-2) << "log-det should be non-trivial";
  }
}

TEST(Flow, ParameterGradientMatchesCentralDifferences) {
  for (auto cfg : {small_config(5, 4, 3, 7), small_config(2, 0, 2, 3), small_config(6, 4, 2, 0)}) {
    CouplingFlow<double> flow(cfg, Device::cpu);
    auto p = random_params(flow, 31, 0.3).to_host();
    const int64_t N = 9, D = cfg.dim, C = cfg.cond_dim;
    auto x = randn<double>(N * D, 32);
    auto c = randn<double>(N * C, 33);
    auto g = gradient(flow, p, x, c, N);
    std::vector<double> fd(p.size());
    const double h = 1e-6;
    for (size_t i = 0; i < p.size(); ++i) {
      auto pp = p, pm = p;
      pp[i] += h, pm[i] -= h;
      fd[i] = (mean_nll(flow, pp, x, c, N) - mean_nll(flow, pm, x, c, N)) / (2 * h);
    }
    EXPECT_LT(rel_error(g, fd), 1e-6) << "dim " << D << " cond " << C;
    std::printf("dim %ld cond %ld: gradient rel. error %.2e\n", long(D), long(C), rel_error(g, fd));
    // Spot check: every parameter group receives gradient.
    double gsq = 0;
    for (double v : g) gsq += v * v;
    EXPECT_GT(gsq, 1e-6);
  }
}

TEST(Flow, InputGradientMatchesCentralDifferences) {
  FlowConfig cfg = small_config(7, 4, 4, 11);
  CouplingFlow<double> flow(cfg, Device::cpu);
  auto params = random_params(flow, 41, 0.3);
  auto p = params.to_host();
  const int64_t N = 6, D = 7, C = 4;
  auto x = randn<double>(N * D, 42);
  auto c = randn<double>(N * C, 43);
  flow.forward(params, mat(x, N, D), mat(c, N, C));
  Buffer<double> g(p.size(), Device::cpu);
  std::vector<double> gx(N * D);
  flow.backward(params, mat(x, N, D), mat(c, N, C), g, mat(gx, N, D));
  std::vector<double> fd(N * D);
  const double h = 1e-6;
  for (int64_t i = 0; i < N * D; ++i) {
    auto xp = x, xm = x;
    xp[i] += h, xm[i] -= h;
    fd[i] = (mean_nll(flow, p, xp, c, N) - mean_nll(flow, p, xm, c, N)) / (2 * h);
  }
  EXPECT_LT(rel_error(gx, fd), 1e-6);
}

TEST(Flow, HessianVectorProductMatchesDifferencesOfGradientAndIsSymmetric) {
  for (auto cfg : {small_config(5, 4, 3, 7), small_config(2, 0, 2, 3), small_config(9, 6, 4, 0)}) {
    CouplingFlow<double> flow(cfg, Device::cpu);
    auto params = random_params(flow, 51, 0.3);
    auto p = params.to_host();
    const int64_t N = 8, D = cfg.dim, C = cfg.cond_dim;
    auto x = randn<double>(N * D, 52);
    auto c = randn<double>(N * C, 53);
    auto u = randn<double>(p.size(), 54);
    auto v = randn<double>(p.size(), 55);
    auto cv = C ? mat(c, N, C) : MatrixView<const double>{};
    auto hvp = [&](const std::vector<double>& dir, std::vector<double>& grad_out) {
      auto vb = Buffer<double>::from_host(dir, Device::cpu);
      Buffer<double> g(p.size(), Device::cpu), hv(p.size(), Device::cpu);
      flow.forward(params, mat(x, N, D), cv);
      flow.hvp(params, mat(x, N, D), cv, vb, g, hv);
      grad_out = g.to_host();
      return hv.to_host();
    };
    std::vector<double> g_hvp;
    auto Hv = hvp(v, g_hvp);
    auto Hu = hvp(u, g_hvp);
    // The gradient from hvp() equals backward()'s.
    EXPECT_LT(rel_error(g_hvp, gradient(flow, p, x, c, N)), 1e-13);
    // Central differences of the gradient along v.
    const double eps = 1e-5;
    std::vector<double> pp(p.size()), pm(p.size());
    for (size_t i = 0; i < p.size(); ++i) pp[i] = p[i] + eps * v[i], pm[i] = p[i] - eps * v[i];
    auto gp = gradient(flow, pp, x, c, N), gm = gradient(flow, pm, x, c, N);
    std::vector<double> fd(p.size());
    for (size_t i = 0; i < p.size(); ++i) fd[i] = (gp[i] - gm[i]) / (2 * eps);
    EXPECT_LT(rel_error(Hv, fd), 1e-5) << "dim " << D;
    double uHv = 0, vHu = 0, scale = 0;
    for (size_t i = 0; i < p.size(); ++i)
      uHv += u[i] * Hv[i], vHu += v[i] * Hu[i], scale += std::abs(u[i] * Hv[i]);
    EXPECT_NEAR(uHv, vHu, 1e-10 * scale) << "dim " << D;
    std::printf("dim %ld: HVP rel. error vs differences %.2e, |u'Hv - v'Hu| / scale %.2e\n",
                long(D), rel_error(Hv, fd), std::abs(uHv - vHu) / scale);
  }
}

TEST(Flow, ConfigRejectsUnknownKeysAndBadValues) {
  EXPECT_THROW(FlowConfig::from_json({{"dim", 8}, {"n_blcoks", 4}}), InputError);
  EXPECT_THROW(FlowConfig::from_json({{"dim", 1}}), InputError);
  EXPECT_THROW(FlowConfig::from_json({{"dim", 8}, {"clamp", -1.0}}), InputError);
  EXPECT_THROW(FlowConfig::from_json({{"dim", "eight"}}), InputError);
  EXPECT_THROW(FlowConfig::from_json({{"dim", 16.9}}), InputError);    // not silently 16
  EXPECT_THROW(FlowConfig::from_json({{"dim", 8}, {"seed", -1}}), InputError);
  EXPECT_THROW(FlowConfig::from_json({{"dim", 3000000000LL}}), InputError);
  EXPECT_THROW(FlowConfig::from_json({{"dim", 8}, {"n_blocks", 100000}}), InputError);
  auto c = FlowConfig::from_json({{"dim", 8}, {"n_blocks", 4}, {"clamp", 1.5}});
  EXPECT_EQ(c.n_blocks, 4);
  EXPECT_EQ(FlowConfig::from_json(c.to_json()).to_json(), c.to_json());
}

TEST(Flow, BadInputGetsClearErrors) {
  FlowConfig cfg = small_config(4, 2, 2, 5);
  CouplingFlow<float> flow(cfg, Device::cpu);
  auto params = flow.init_params();
  const int64_t N = 5;
  auto x = randn<float>(N * 4, 1);
  auto c = randn<float>(N * 2, 2);
  // Shape mismatches.
  EXPECT_THROW(flow.forward(params, mat(x, N, 4), mat(c, N - 1, 2)), InputError);
  EXPECT_THROW(flow.forward(params, mat(x, 4, 5), mat(c, 4, 2)), InputError);
  EXPECT_THROW(flow.forward(params, mat(x, N, 4), {}), InputError);
  // Zero sizes.
  EXPECT_THROW(flow.forward(params, mat(x, 0, 4), mat(c, 0, 2)), InputError);
  // Wrong parameter-buffer length.
  Buffer<float> short_params(flow.n_params() - 1, Device::cpu);
  EXPECT_THROW(flow.forward(short_params, mat(x, N, 4), mat(c, N, 2)), InputError);
  // NaN and Inf: the message names the samples.
  auto bad = x;
  bad[2 * 4 + 1] = NAN;
  bad[4 * 4 + 3] = INFINITY;
  try {
    flow.forward(params, mat(bad, N, 4), mat(c, N, 2));
    FAIL() << "NaN input accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("samples 2, 4"), std::string::npos) << e.what();
  }
  // backward() without forward().
  Buffer<float> g(flow.n_params(), Device::cpu);
  EXPECT_THROW(flow.backward(params, mat(x, N, 4), mat(c, N, 2), g), InputError);
  // Valid call still works after the failures.
  EXPECT_TRUE(std::isfinite(flow.forward(params, mat(x, N, 4), mat(c, N, 2))));
  // Output buffers that alias the inputs of backward() / hvp().
  EXPECT_THROW(flow.backward(params, mat(x, N, 4), mat(c, N, 2), params), InputError);
  Buffer<float> v = flow.init_params(), g2(flow.n_params(), Device::cpu);
  EXPECT_THROW(flow.hvp(params, mat(x, N, 4), mat(c, N, 2), v, g2, v), InputError);
  EXPECT_THROW(flow.hvp(params, mat(x, N, 4), mat(c, N, 2), v, g2, g2), InputError);
  // inverse(): a NaN condition or parameter would come out finite through the ReLU.
  std::vector<float> z(N * 4), xb(N * 4);
  auto bad_c = c;
  bad_c[3] = NAN;
  EXPECT_THROW(flow.inverse(params, mat(z, N, 4), mat(bad_c, N, 2), mat(xb, N, 4)), InputError);
  auto hp = params.to_host();
  hp[1] = NAN;
  auto bad_params = Buffer<float>::from_host(hp, Device::cpu);
  EXPECT_THROW(flow.inverse(bad_params, mat(z, N, 4), mat(c, N, 2), mat(xb, N, 4)), InputError);
  // A failed init_actnorm leaves the caller's parameters (ActNorm included) as they were.
  params = random_params(flow, 71);
  auto before = params.to_host();
  EXPECT_THROW(flow.init_actnorm(params, mat(bad, N, 4), mat(c, N, 2)), InputError);
  EXPECT_EQ(params.to_host(), before);
}
