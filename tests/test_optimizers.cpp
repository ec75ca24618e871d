// CPU tests of the SGD and Adam(W) optimizers: hand-computed steps, an independent float64
// Adam reimplementation, convergence, config validation, non-finite gradients, state handling.
// Suite names start with 'optim' (lower case, as ctest -R matches case-sensitively) so that
// `ctest -R optim` selects them.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "core/error.h"
#include "engine/flow/optimizer.h"

namespace mirad {
namespace {

using nlohmann::json;

using mirad::test::expect_input_error;

// Applies the gradient sequence grads[k] (one vector per step) and returns the params after
// each step.
template <typename T>
std::vector<std::vector<T>> run_steps(const json& cfg, std::vector<T> params,
                                      const std::vector<std::vector<T>>& grads) {
  auto opt = make_optimizer<T>(cfg, static_cast<int64_t>(params.size()), Device::cpu);
  std::vector<std::vector<T>> history;
  for (const auto& g : grads) {
    opt->step(params.data(), g.data(), static_cast<int64_t>(params.size()), {});
    history.push_back(params);
  }
  return history;
}

template <typename T>
void expect_near_vec(const std::vector<T>& got, const std::vector<double>& want, double tol,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(double(got[i]), want[i], tol) << what << " [" << i << "]";
}

// ---- Hand-computed examples -------------------------------------------------------------

TEST(optim_sgd, HandComputedPlain) {
  // lr 0.1, p0 = [1, -2], g = [0.5, 1] twice:
  //   p1 = [1 - 0.05, -2 - 0.1] = [0.95, -2.1];  p2 = [0.90, -2.2].
  auto h = run_steps<double>({{"type", "sgd"}, {"lr", 0.1}}, {1.0, -2.0}, {{0.5, 1.0}, {0.5, 1.0}});
  expect_near_vec(h[0], {0.95, -2.1}, 1e-15, "step 1");
  expect_near_vec(h[1], {0.90, -2.2}, 1e-15, "step 2");
}

TEST(optim_sgd, HandComputedMomentum) {
  // lr 0.1, momentum 0.9, p0 = 1, g = 0.5 every step; buf starts as g (torch):
  //   buf1 = 0.5                     p1 = 1     - 0.1*0.5   = 0.95
  //   buf2 = 0.9*0.5  + 0.5 = 0.95   p2 = 0.95  - 0.1*0.95  = 0.855
  //   buf3 = 0.9*0.95 + 0.5 = 1.355  p3 = 0.855 - 0.1*1.355 = 0.7195
  auto h = run_steps<double>({{"type", "sgd"}, {"lr", 0.1}, {"momentum", 0.9}}, {1.0},
                             {{0.5}, {0.5}, {0.5}});
  expect_near_vec(h[0], {0.95}, 1e-15, "step 1");
  expect_near_vec(h[1], {0.855}, 1e-15, "step 2");
  expect_near_vec(h[2], {0.7195}, 1e-15, "step 3");
}

TEST(optim_sgd, HandComputedWeightDecay) {
  // lr 0.1, weight_decay 0.1, p0 = 1, g = 0.5: the L2 term joins the gradient.
  //   g1 = 0.5 + 0.1*1    = 0.6    p1 = 1    - 0.06   = 0.94
  //   g2 = 0.5 + 0.1*0.94 = 0.594  p2 = 0.94 - 0.0594 = 0.8806
  auto h = run_steps<double>({{"type", "sgd"}, {"lr", 0.1}, {"weight_decay", 0.1}}, {1.0},
                             {{0.5}, {0.5}});
  expect_near_vec(h[0], {0.94}, 1e-15, "step 1");
  expect_near_vec(h[1], {0.8806}, 1e-15, "step 2");
}

TEST(optim_adam, HandComputed) {
  // lr 0.1, beta1 0.9, beta2 0.999, eps 1e-8; element 0: p0 = 1, g = 0.5, -0.25, 1.
  //  t=1: m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 2.5e-4; bc1 = 0.1, bc2 = 0.001
  //       m^ = 0.5, v^ = 0.25, p1 = 1 - 0.1*0.5/(0.5 + 1e-8) = 0.900000002
  //  t=2: m = 0.045 - 0.025 = 0.02, v = 2.4975e-4 + 6.25e-5 = 3.1225e-4
  //       bc1 = 0.19, bc2 = 0.001999; m^ = 0.105263157..., v^ = 0.156203101...
  //       p2 = 0.900000002 - 0.1*0.105263157/(0.395225381 + 1e-8) = 0.873366298707846
  //  t=3: m = 0.018 + 0.1 = 0.118, v = 3.11937775e-4 + 1e-3 = 1.31193775e-3
  //       bc1 = 0.271, bc2 = 0.002997001; m^ = 0.435424354, v^ = 0.437750188
  //       p3 = 0.873366298707846 - 0.1*0.435424354/(0.661627681 + 1e-8) = 0.807555139677090
  // element 1: p0 = -2, g = -1, 2, 0 -> m^ = -1, 0.578947368, 0.365313653;
  //       v^ = 1, 2.500750375, 1.666332777 -> p = -1.900000001, -1.936610353, -1.964910262
  const json cfg = {{"type", "adam"}, {"lr", 0.1}};
  auto h = run_steps<double>(cfg, {1.0, -2.0}, {{0.5, -1.0}, {-0.25, 2.0}, {1.0, 0.0}});
  expect_near_vec(h[0], {0.900000002, -1.900000001}, 1e-12, "step 1");
  expect_near_vec(h[1], {0.8733662987078463, -1.9366103534720749}, 1e-12, "step 2");
  expect_near_vec(h[2], {0.8075551396770898, -1.9649102620009304}, 1e-12, "step 3");
  // The float instance runs the same arithmetic in single precision.
  auto hf = run_steps<float>(cfg, {1.0f, -2.0f}, {{0.5f, -1.0f}, {-0.25f, 2.0f}, {1.0f, 0.0f}});
  expect_near_vec(hf[2], {0.8075551396770898, -1.9649102620009304}, 2e-6, "float step 3");
}

TEST(optim_adam, HandComputedL2) {
  // weight_decay 0.1 coupled: g joins 0.1*p before the moments.
  //  t=1: g = 0.5 + 0.1 = 0.6; m^ = 0.6, v^ = 0.36 -> p1 = 1 - 0.1*0.6/(0.6 + 1e-8)
  //       = 0.9000000016666666
  //  t=2: g = -0.25 + 0.09000000016666666 = -0.15999999983333335
  //       m = 0.054 - 0.016 = 0.038, v = 3.5964e-4 + 2.56e-5 = 3.8524e-4
  //       m^ = 0.2000000000877, v^ = 0.1927163581524 -> p2 = 0.8544413674617625
  auto h = run_steps<double>({{"type", "adam"}, {"lr", 0.1}, {"weight_decay", 0.1}}, {1.0},
                             {{0.5}, {-0.25}});
  expect_near_vec(h[0], {0.9000000016666666}, 1e-12, "step 1");
  expect_near_vec(h[1], {0.8544413674617625}, 1e-12, "step 2");
}

TEST(optim_adam, HandComputedDecoupled) {
  // AdamW, weight_decay 0.1: p shrinks by 1 - lr*wd = 0.99 first, the moments see raw g.
  //  t=1: p = 0.99 - 0.099999998 = 0.890000002
  //  t=2: p = 0.890000002*0.99 - 0.026633703292154 = 0.8544662986878463
  const std::vector<std::vector<double>> grads = {{0.5}, {-0.25}};
  for (const json& cfg :
       {json{
            {"type", "adam"}, {"lr", 0.1}, {"weight_decay", 0.1}, {"decoupled_weight_decay", true}},
        json{{"type", "adamw"}, {"lr", 0.1}, {"weight_decay", 0.1}}}) {
    auto h = run_steps<double>(cfg, {1.0}, grads);
    expect_near_vec(h[0], {0.890000002}, 1e-12, cfg.dump());
    expect_near_vec(h[1], {0.8544662986878463}, 1e-12, cfg.dump());
  }
}

// ---- Adam against an independent float64 reimplementation --------------------------------

// torch.optim.Adam's algorithm written out directly, sharing no code with the engine.
struct ReferenceAdam {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
  std::vector<double> m, v;
  int t = 0;

  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    for (size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (decoupled)
        p[i] *= 1.0 - lr * weight_decay;
      else
        g += weight_decay * p[i];
      m[i] = beta1 * m[i] + (1.0 - beta1) * g;
      v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
      const double m_hat = m[i] / (1.0 - std::pow(beta1, t));
      const double v_hat = v[i] / (1.0 - std::pow(beta2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

struct AdamCase {
  double weight_decay;
  bool decoupled;
};
void PrintTo(const AdamCase& c, std::ostream* os) {
  *os << "weight_decay=" << c.weight_decay << (c.decoupled ? " decoupled" : "");
}

class optim_adam_vs_reference : public ::testing::TestWithParam<AdamCase> {};

TEST_P(optim_adam_vs_reference, HundredStepsRandom) {
  const AdamCase pc = GetParam();
  const int64_t n = 257;
  std::mt19937_64 rng(1234);
  std::normal_distribution<double> normal(0.0, 1.0);
  const json cfg = {{"type", "adam"},
                    {"lr", 1e-2},
                    {"beta1", 0.85},
                    {"beta2", 0.995},
                    {"eps", 1e-6},
                    {"weight_decay", pc.weight_decay},
                    {"decoupled_weight_decay", pc.decoupled}};
  std::vector<double> p_ref(n);
  for (auto& x : p_ref) x = normal(rng);
  std::vector<float> p_f(p_ref.begin(), p_ref.end());
  std::vector<double> p_d(p_f.begin(), p_f.end());
  p_ref = p_d;  // start all three from the same float-representable values
  ReferenceAdam ref{1e-2, 0.85, 0.995, 1e-6, pc.weight_decay, pc.decoupled, {}, {}};
  auto opt_f = make_optimizer<float>(cfg, n, Device::cpu);
  auto opt_d = make_optimizer<double>(cfg, n, Device::cpu);
  std::vector<double> g_d(n);
  std::vector<float> g_f(n);
  for (int step = 0; step < 100; ++step) {
    // Gradients of scale 1e-3..1e1 so some coordinates sit near eps and some far from it.
    for (int64_t i = 0; i < n; ++i) {
      g_f[i] = float(normal(rng) * std::pow(10.0, double(i % 5) - 3.0));
      g_d[i] = g_f[i];
    }
    ref.step(p_ref, g_d);
    opt_f->step(p_f.data(), g_f.data(), n, {});
    opt_d->step(p_d.data(), g_d.data(), n, {});
  }
  EXPECT_EQ(opt_d->n_steps(), 100);
  double max_err_f = 0, max_err_d = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_err_d = std::max(max_err_d, std::abs(p_d[i] - p_ref[i]));
    max_err_f = std::max(max_err_f, std::abs(double(p_f[i]) - p_ref[i]));
  }
  // 100 steps of lr 1e-2 move each weight by <= 1; float rounding per step is ~1e-7 relative.
  EXPECT_LT(max_err_d, 1e-12);
  EXPECT_LT(max_err_f, 2e-5);
  // The exported moments match the reference moments too.
  auto state = opt_d->export_state();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_NEAR(state.slots.at("exp_avg")[i], ref.m[i], 1e-12);
    ASSERT_NEAR(state.slots.at("exp_avg_sq")[i], ref.v[i], 1e-12);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, optim_adam_vs_reference,
                         ::testing::Values(AdamCase{0.0, false}, AdamCase{0.05, false},
                                           AdamCase{0.05, true}),
                         [](const auto& info) {
                           return std::string(info.param.weight_decay == 0 ? "plain"
                                              : info.param.decoupled       ? "adamw"
                                                                           : "l2");
                         });

// ---- Convergence -------------------------------------------------------------------------

// f(p) = 0.5 * sum a_i (p_i - c_i)^2 with curvatures a_i in [0.5, 4]; grad = a_i (p_i - c_i).
double minimise_quadratic(const json& cfg, int steps) {
  const int64_t n = 64;
  std::vector<double> a(n), c(n), p(n, 0.0), g(n);
  for (int64_t i = 0; i < n; ++i)
    a[i] = 0.5 + 3.5 * double(i) / double(n - 1), c[i] = std::sin(double(i));
  auto opt = make_optimizer<double>(cfg, n, Device::cpu);
  for (int s = 0; s < steps; ++s) {
    for (int64_t i = 0; i < n; ++i) g[i] = a[i] * (p[i] - c[i]);
    opt->step(p.data(), g.data(), n, {});
  }
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(p[i] - c[i]));
  return worst;
}

TEST(optim, MinimiseQuadratic) {
  EXPECT_LT(minimise_quadratic({{"type", "sgd"}, {"lr", 0.2}}, 200), 1e-6);
  EXPECT_LT(minimise_quadratic({{"type", "sgd"}, {"lr", 0.1}, {"momentum", 0.9}}, 400), 1e-6);
  // Adam's steps have size ~lr near the optimum, so it settles to within a few lr of c.
  EXPECT_LT(minimise_quadratic({{"type", "adam"}, {"lr", 0.05}}, 2000), 1e-3);
  EXPECT_LT(minimise_quadratic({{"type", "adamw"}, {"lr", 0.05}}, 2000), 1e-3);
}

// ---- Config validation -------------------------------------------------------------------

TEST(optim_config, UnknownKeyRejected) {
  expect_input_error(
      [] {
        make_optimizer<float>({{"type", "adam"}, {"lr", 1e-3}, {"betas", 0.9}}, 4, Device::cpu);
      },
      {"'betas'", "beta1", "beta2", "eps", "decoupled_weight_decay"});
  // A key valid for Adam is unknown for SGD.
  expect_input_error(
      [] {
        make_optimizer<float>({{"type", "sgd"}, {"lr", 1e-3}, {"beta1", 0.9}}, 4, Device::cpu);
      },
      {"'beta1'", "'sgd'", "momentum"});
  expect_input_error(
      [] {
        make_optimizer<float>({{"type", "rmsprop"}, {"lr", 1e-3}}, 4, Device::cpu);
      },
      {"'rmsprop'", "sgd", "adam"});
}

TEST(optim_config, BadValuesRejected) {
  const std::vector<std::pair<json, std::string>> bad = {
      {{{"type", "adam"}, {"lr", 0.0}}, "'lr'"},
      {{{"type", "adam"}, {"lr", -1e-3}}, "'lr'"},
      {{{"type", "adam"}}, "'lr' is required"},
      {{{"type", "adam"}, {"lr", "0.001"}}, "'lr' must be a number"},
      {{{"type", "adam"}, {"lr", true}}, "'lr' must be a number"},
      {{{"type", "adam"}, {"lr", std::numeric_limits<double>::infinity()}}, "finite"},
      {{{"type", "adam"}, {"lr", 1e-3}, {"beta1", 1.0}}, "'beta1' must be in [0, 1)"},
      {{{"type", "adam"}, {"lr", 1e-3}, {"beta2", -0.1}}, "'beta2' must be in [0, 1)"},
      {{{"type", "adam"}, {"lr", 1e-3}, {"eps", 0.0}}, "'eps' must be > 0"},
      {{{"type", "adam"}, {"lr", 1e-3}, {"weight_decay", -1.0}}, "'weight_decay'"},
      {{{"type", "adam"}, {"lr", 1e-3}, {"check_finite", 1}}, "'check_finite'"},
      {{{"type", "adam"}, {"lr", 1e-3}, {"decoupled_weight_decay", "yes"}}, "decoupled"},
      {{{"type", "adamw"}, {"lr", 1e-3}, {"decoupled_weight_decay", false}}, "adamw"},
      {{{"type", "adamw"}, {"lr", 0.5}, {"weight_decay", 4.0}}, "lr * weight_decay"},
      {{{"type", "sgd"}, {"lr", 1e-3}, {"momentum", 1.0}}, "'momentum'"},
      {{{"type", "sgd"}, {"lr", 1e-3}, {"momentum", -0.5}}, "'momentum'"},
      {{{"type", 3}, {"lr", 1e-3}}, "'type' must be a string"},
      {{{"lr", 1e-3}}, "missing 'type'"},
      {json::array({1, 2}), "JSON object"},
  };
  for (const auto& [cfg, fragment] : bad)
    expect_input_error([&] { make_optimizer<double>(cfg, 4, Device::cpu); }, {fragment});
  expect_input_error(
      [] {
        make_optimizer<float>({{"type", "sgd"}, {"lr", 1.0}}, -1, Device::cpu);
      },
      {"n_params"});
}

TEST(optim_config, HyperparamsRoundTrip) {
  auto opt = make_optimizer<float>({{"type", "adamw"}, {"lr", 3e-4}, {"weight_decay", 0.01}}, 8,
                                   Device::cpu);
  const json hp = opt->hyperparams();
  EXPECT_EQ(hp.at("type"), "adam");
  EXPECT_EQ(hp.at("lr"), 3e-4);
  EXPECT_EQ(hp.at("beta1"), 0.9);
  EXPECT_EQ(hp.at("beta2"), 0.999);
  EXPECT_EQ(hp.at("eps"), 1e-8);
  EXPECT_EQ(hp.at("weight_decay"), 0.01);
  EXPECT_EQ(hp.at("decoupled_weight_decay"), true);
  EXPECT_EQ(hp.at("check_finite"), true);
  EXPECT_EQ(make_optimizer<float>(hp, 8, Device::cpu)->hyperparams(), hp);
  const json sgd =
      make_optimizer<double>({{"type", "sgd"}, {"lr", 0.5}}, 1, Device::cpu)->hyperparams();
  EXPECT_EQ(sgd, (json{{"type", "sgd"},
                       {"lr", 0.5},
                       {"momentum", 0.0},
                       {"weight_decay", 0.0},
                       {"check_finite", true}}));
}

TEST(optim_config, SetLearningRateValidated) {
  auto opt = make_optimizer<double>({{"type", "sgd"}, {"lr", 0.5}}, 1, Device::cpu);
  opt->set_learning_rate(0.25);
  EXPECT_EQ(opt->learning_rate(), 0.25);
  std::vector<double> p = {1.0}, g = {1.0};
  opt->step(p.data(), g.data(), 1, {});
  EXPECT_DOUBLE_EQ(p[0], 0.75);
  expect_input_error([&] { opt->set_learning_rate(0.0); }, {"'lr'"});
  EXPECT_EQ(opt->learning_rate(), 0.25);
}

TEST(optim_config, CudaIsFloatOnly) {
  // Either reason is an InputError here: no CUDA build, no device, or double on CUDA.
  expect_input_error(
      [] {
        make_optimizer<double>({{"type", "sgd"}, {"lr", 1.0}}, 4, Device::cuda);
      },
      {"CUDA"});
}

// ---- Runtime checks ----------------------------------------------------------------------

TEST(optim, SizeMismatchRejected) {
  auto opt = make_optimizer<float>({{"type", "adam"}, {"lr", 1e-3}}, 10, Device::cpu);
  std::vector<float> p(11, 0.f), g(11, 0.f);
  expect_input_error([&] { opt->step(p.data(), g.data(), 11, {}); }, {"10", "11"});
  expect_input_error([&] { opt->step(nullptr, g.data(), 10, {}); }, {"null"});
  EXPECT_EQ(opt->n_steps(), 0);
}

TEST(optim, NonFiniteGradientRejected) {
  for (const char* type : {"sgd", "adam"}) {
    const json cfg = {{"type", type}, {"lr", 0.1}, {"weight_decay", 0.01}};
    json with_momentum = cfg;
    if (std::string(type) == "sgd") with_momentum["momentum"] = 0.9;
    auto opt = make_optimizer<float>(with_momentum, 6, Device::cpu);
    std::vector<float> p = {1, 2, 3, 4, 5, 6}, g = {0.1f, -0.2f, 0.3f, 0.1f, 0.1f, 0.1f};
    opt->step(p.data(), g.data(), 6, {});
    const std::vector<float> p_before = p;
    const auto state_before = opt->export_state();

    std::vector<float> bad = g;
    bad[3] = std::numeric_limits<float>::quiet_NaN();
    bad[5] = -std::numeric_limits<float>::infinity();
    expect_input_error([&] { opt->step(p.data(), bad.data(), 6, {}); },
                       {"2 non-finite", "first at index 3", "unchanged"});
    EXPECT_EQ(p, p_before) << type;
    EXPECT_EQ(opt->n_steps(), 1) << type;
    const auto state_after = opt->export_state();
    EXPECT_EQ(state_after.slots, state_before.slots) << type;
  }
}

TEST(optim, NonFiniteCheckCanBeDisabled) {
  // Documents the opt-out: NaN then flows into the weights, as the caller asked.
  auto opt = make_optimizer<float>({{"type", "sgd"}, {"lr", 0.1}, {"check_finite", false}}, 2,
                                   Device::cpu);
  std::vector<float> p = {1, 1}, g = {std::numeric_limits<float>::quiet_NaN(), 1};
  opt->step(p.data(), g.data(), 2, {});
  EXPECT_TRUE(std::isnan(p[0]));
  EXPECT_FLOAT_EQ(p[1], 0.9f);
}

TEST(optim, ResetMatchesFreshOptimizer) {
  const json cfg = {{"type", "adam"}, {"lr", 0.05}};
  const std::vector<double> p0 = {0.3, -0.7, 1.1}, g = {0.2, -0.4, 0.9};
  auto used = make_optimizer<double>(cfg, 3, Device::cpu);
  std::vector<double> p = p0;
  for (int i = 0; i < 7; ++i) used->step(p.data(), g.data(), 3, {});
  used->reset();
  EXPECT_EQ(used->n_steps(), 0);
  for (const auto& [name, values] : used->export_state().slots)
    for (double v : values) EXPECT_EQ(v, 0.0) << name;
  auto fresh = make_optimizer<double>(cfg, 3, Device::cpu);
  std::vector<double> pa = p0, pb = p0;
  for (int i = 0; i < 3; ++i) {
    used->step(pa.data(), g.data(), 3, {});
    fresh->step(pb.data(), g.data(), 3, {});
  }
  EXPECT_EQ(pa, pb);  // bit-identical: same arithmetic from the same state
}

TEST(optim, ExportImportContinuesExactly) {
  for (const json& cfg : {json{{"type", "adam"}, {"lr", 0.05}, {"weight_decay", 0.1}},
                          json{{"type", "sgd"}, {"lr", 0.05}, {"momentum", 0.5}}}) {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<std::vector<float>> grads(10, std::vector<float>(5));
    for (auto& g : grads)
      for (auto& x : g) x = u(rng);
    auto a = make_optimizer<float>(cfg, 5, Device::cpu);
    std::vector<float> pa(5, 0.5f);
    for (int i = 0; i < 5; ++i) a->step(pa.data(), grads[i].data(), 5, {});
    auto b = make_optimizer<float>(a->hyperparams(), 5, Device::cpu);
    b->import_state(a->export_state());
    EXPECT_EQ(b->n_steps(), 5);
    std::vector<float> pb = pa;
    for (int i = 5; i < 10; ++i) {
      a->step(pa.data(), grads[i].data(), 5, {});
      b->step(pb.data(), grads[i].data(), 5, {});
    }
    EXPECT_EQ(pa, pb) << cfg.dump();
  }
}

TEST(optim, ImportRejectsMismatchedState) {
  auto adam = make_optimizer<float>({{"type", "adam"}, {"lr", 0.1}}, 4, Device::cpu);
  auto good = adam->export_state();

  auto wrong_type = good;
  wrong_type.type = "sgd";
  expect_input_error([&] { adam->import_state(wrong_type); }, {"'sgd'"});
  auto wrong_size = good;
  wrong_size.slots["exp_avg"].resize(3);
  expect_input_error([&] { adam->import_state(wrong_size); }, {"exp_avg", "3", "4"});
  auto wrong_name = good;
  wrong_name.slots["momentum_buffer"] = wrong_name.slots.at("exp_avg");
  wrong_name.slots.erase("exp_avg");
  expect_input_error([&] { adam->import_state(wrong_name); }, {"momentum_buffer"});
  auto negative = good;
  negative.step = -1;
  expect_input_error([&] { adam->import_state(negative); }, {"negative"});

  // SGD without momentum has no slots at all.
  auto sgd = make_optimizer<float>({{"type", "sgd"}, {"lr", 0.1}}, 4, Device::cpu);
  EXPECT_TRUE(sgd->export_state().slots.empty());
}

TEST(optim, EmptyParameterBuffer) {
  auto opt = make_optimizer<float>({{"type", "adam"}, {"lr", 0.1}}, 0, Device::cpu);
  opt->step(nullptr, nullptr, 0, {});
  EXPECT_EQ(opt->n_steps(), 1);
}

}  // namespace
}  // namespace mirad
