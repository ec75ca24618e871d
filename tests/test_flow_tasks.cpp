// Batched tasks (CouplingFlow::set_tasks): B tasks in one pass give, task by task, exactly what
// each task gives alone (forward, inverse, gradient, HVP, and the MAML meta-gradient built on
// them), and malformed batches are refused. On the CPU the batched GEMMs are the per-task GEMMs
// with the same shapes, so the results must be bit-identical, not merely close.
#include <gtest/gtest.h>

#include <vector>

#include "core/error.h"
#include "engine/flow/flow.h"
#include "engine/training/maml.h"
#include "flow_test_util.h"

using namespace mirad;
using mirad::test::randn;
using mirad::test::random_params;

namespace {

template <typename T>
FlowConfig small_config() {
  FlowConfig f;
  f.dim = 7, f.cond_dim = 3, f.n_blocks = 3, f.hidden = 10, f.seed = 21;
  return f;
}

// B tasks: B different parameter vectors, B row blocks.
template <typename T>
struct Tasks {
  int64_t B, n, P;
  std::vector<T> params, x, c, v;
  Tasks(const CouplingFlow<T>& flow, int64_t B_, int64_t n_) : B(B_), n(n_), P(flow.n_params()) {
    for (int64_t b = 0; b < B; ++b) {
      auto p = random_params(flow, 100 + b).to_host();
      params.insert(params.end(), p.begin(), p.end());
    }
    const int64_t D = flow.config().dim, C = flow.config().cond_dim;
    x = randn<T>(B * n * D, 7);
    c = randn<T>(B * n * C, 8);
    v = randn<T>(B * P, 9, 0.1);
  }
  template <typename V>
  std::vector<V> slice(const std::vector<V>& all, int64_t b, int64_t per) const {
    return std::vector<V>(all.begin() + b * per, all.begin() + (b + 1) * per);
  }
};

template <typename T>
void expect_identical(const std::vector<T>& batched, int64_t offset, const std::vector<T>& alone,
                      const char* what, int64_t b) {
  for (size_t i = 0; i < alone.size(); ++i)
    ASSERT_EQ(batched[offset + i], alone[i]) << what << " task " << b << " index " << i;
}

template <typename T>
void batched_equals_alone() {
  const FlowConfig f = small_config<T>();
  const int64_t D = f.dim, C = f.cond_dim, B = 3, n = 11;
  CouplingFlow<T> alone(f, Device::cpu), batched(f, Device::cpu);
  batched.set_tasks(B);
  EXPECT_EQ(batched.batch_params(), B * batched.n_params());
  Tasks<T> t(alone, B, n);
  const int64_t P = t.P;
  MatrixView<const T> xv(t.x.data(), B * n, D, Device::cpu), cv(t.c.data(), B * n, C, Device::cpu);
  std::vector<T> z(B * n * D), g(B * P), hv(B * P), hv_nograd(B * P), gx(B * n * D);
  std::vector<T> nll;
  const double mean = batched.forward(VecView<const T>(t.params.data(), B * P, Device::cpu), xv,
                                      cv, MatrixView<T>(z.data(), B * n, D, Device::cpu), &nll);
  batched.backward({t.params.data(), B * P, Device::cpu}, xv, cv, {g.data(), B * P, Device::cpu},
                   {gx.data(), B * n, D, Device::cpu});
  batched.hvp({t.params.data(), B * P, Device::cpu}, xv, cv, {t.v.data(), B * P, Device::cpu},
              {g.data(), B * P, Device::cpu}, {hv.data(), B * P, Device::cpu});
  // An empty gradient skips the parameter gradient but must not change H*v.
  batched.hvp({t.params.data(), B * P, Device::cpu}, xv, cv, {t.v.data(), B * P, Device::cpu}, {},
              {hv_nograd.data(), B * P, Device::cpu});
  double sum_of_means = 0;
  for (int64_t b = 0; b < B; ++b) {
    auto p = t.slice(t.params, b, P), x = t.slice(t.x, b, n * D), c = t.slice(t.c, b, n * C),
         v = t.slice(t.v, b, P);
    MatrixView<const T> xb(x.data(), n, D, Device::cpu), cb(c.data(), n, C, Device::cpu);
    VecView<const T> pb(p.data(), P, Device::cpu);
    std::vector<T> zb(n * D), gb(P), hb(P), gxb(n * D), nb;
    sum_of_means += alone.forward(pb, xb, cb, MatrixView<T>(zb.data(), n, D, Device::cpu), &nb);
    alone.backward(pb, xb, cb, {gb.data(), P, Device::cpu}, {gxb.data(), n, D, Device::cpu});
    expect_identical(z, b * n * D, zb, "z", b);
    expect_identical(nll, b * n, nb, "nll", b);
    expect_identical(g, b * P, gb, "gradient", b);
    expect_identical(gx, b * n * D, gxb, "input gradient", b);
    alone.hvp(pb, xb, cb, {v.data(), P, Device::cpu}, {gb.data(), P, Device::cpu},
              {hb.data(), P, Device::cpu});
    expect_identical(hv, b * P, hb, "HVP", b);
    expect_identical(hv_nograd, b * P, hb, "HVP without gradient", b);
  }
  // Equal task sizes: the mean over all rows is the mean of the task means.
  EXPECT_NEAR(mean, sum_of_means / double(B), 1e-12 * std::abs(mean) + 1e-12);

  // The inverse, batched, recovers every task's x.
  std::vector<T> xr(B * n * D);
  batched.inverse({t.params.data(), B * P, Device::cpu}, {z.data(), B * n, D, Device::cpu}, cv,
                  {xr.data(), B * n, D, Device::cpu});
  for (size_t i = 0; i < xr.size(); ++i)
    ASSERT_NEAR(double(xr[i]), double(t.x[i]), (std::is_same_v<T, float> ? 2e-4 : 1e-10)) << i;
}

template <typename T>
void batched_meta_gradient_equals_alone(bool second_order) {
  const FlowConfig f = small_config<T>();
  const int64_t D = f.dim, C = f.cond_dim, B = 3, ns = 9, nq = 6, n_inner = 2;
  const T alpha = T(0.05);
  CouplingFlow<T> s1(f, Device::cpu), q1(f, Device::cpu), sB(f, Device::cpu), qB(f, Device::cpu);
  sB.set_tasks(B), qB.set_tasks(B);
  const int64_t P = s1.n_params();
  // One shared theta_0, broadcast to the B tasks as the trainer does.
  auto theta = random_params(s1, 5).to_host();
  std::vector<T> thetaB;
  for (int64_t b = 0; b < B; ++b) thetaB.insert(thetaB.end(), theta.begin(), theta.end());
  auto xs = randn<T>(B * ns * D, 31), cs = randn<T>(B * ns * C, 32);
  auto xq = randn<T>(B * nq * D, 33), cq = randn<T>(B * nq * C, 34);
  TaskData<T> all{{xs.data(), B * ns, D, Device::cpu}, {cs.data(), B * ns, C, Device::cpu},
                  {xq.data(), B * nq, D, Device::cpu}, {cq.data(), B * nq, C, Device::cpu}};
  std::vector<T> metaB(B * P);
  MamlWorkspace<T> wsB, ws1;
  meta_gradient(sB, qB, VecView<const T>(thetaB.data(), B * P, Device::cpu), all, n_inner, alpha,
                second_order, VecView<T>(metaB.data(), B * P, Device::cpu), wsB);
  for (int64_t b = 0; b < B; ++b) {
    TaskData<T> one{{xs.data() + b * ns * D, ns, D, Device::cpu},
                    {cs.data() + b * ns * C, ns, C, Device::cpu},
                    {xq.data() + b * nq * D, nq, D, Device::cpu},
                    {cq.data() + b * nq * C, nq, C, Device::cpu}};
    std::vector<T> meta(P);
    meta_gradient(s1, q1, VecView<const T>(theta.data(), P, Device::cpu), one, n_inner, alpha,
                  second_order, VecView<T>(meta.data(), P, Device::cpu), ws1);
    expect_identical(metaB, b * P, meta, second_order ? "second-order meta-gradient"
                                                      : "first-order meta-gradient", b);
  }
}

}  // namespace

TEST(FlowTasks, BatchedEqualsEachTaskAloneFloat) { batched_equals_alone<float>(); }
TEST(FlowTasks, BatchedEqualsEachTaskAloneDouble) { batched_equals_alone<double>(); }

TEST(FlowTasks, BatchedMetaGradientEqualsEachTaskAlone) {
  batched_meta_gradient_equals_alone<double>(true);
  batched_meta_gradient_equals_alone<double>(false);
  batched_meta_gradient_equals_alone<float>(true);
}

TEST(FlowTasks, MalformedBatchesAreRefused) {
  const FlowConfig f = small_config<float>();
  CouplingFlow<float> flow(f, Device::cpu);
  EXPECT_THROW(flow.set_tasks(0), InputError);
  EXPECT_THROW(flow.set_tasks(-2), InputError);
  flow.set_tasks(2);
  const int64_t P = flow.n_params(), D = f.dim, C = f.cond_dim;
  std::vector<float> p2 = random_params(flow, 1).to_host();
  const std::vector<float> one = p2;
  p2.insert(p2.end(), one.begin(), one.end());
  auto x = randn<float>(5 * D, 2), c = randn<float>(5 * C, 3);
  // Five rows do not split into two equal tasks.
  EXPECT_THROW(flow.forward({p2.data(), 2 * P, Device::cpu}, {x.data(), 5, D, Device::cpu},
                            {c.data(), 5, C, Device::cpu}),
               InputError);
  // One task's parameters for a two-task flow.
  EXPECT_THROW(flow.forward({one.data(), P, Device::cpu}, {x.data(), 4, D, Device::cpu},
                            {c.data(), 4, C, Device::cpu}),
               InputError);
  // ActNorm initialisation is single-task.
  std::vector<float> p = one;
  EXPECT_THROW(flow.init_actnorm({p.data(), P, Device::cpu}, {x.data(), 4, D, Device::cpu},
                                 {c.data(), 4, C, Device::cpu}),
               InputError);
  // Four rows, two tasks, two parameter vectors: accepted.
  EXPECT_NO_THROW(flow.forward({p2.data(), 2 * P, Device::cpu}, {x.data(), 4, D, Device::cpu},
                               {c.data(), 4, C, Device::cpu}));
}
