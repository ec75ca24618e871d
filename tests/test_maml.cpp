// MAML meta-gradient: the exact second-order meta-gradient against float64 central differences
// of F(theta) = L_Q(adapt_n(theta)) for n_inner = 1, 2, 3; first order differs from it; and the
// trainer's MAML step uses exactly the meta-gradient assembled by hand from hvp().
#include <gtest/gtest.h>

#include <cmath>

#include "engine/training/maml.h"
#include "engine/training/tap_trainer.h"
#include "flow_test_util.h"
#include "host/episode_scheduler.h"

using namespace mirad;
using mirad::test::randn;
using mirad::test::random_params;
using mirad::test::rel_error;

namespace {

FlowConfig small_config() {
  FlowConfig c;
  c.dim = 4, c.cond_dim = 4, c.n_blocks = 2, c.hidden = 6, c.seed = 3;
  return c;
}

MatrixView<const double> cmat(const std::vector<double>& v, int64_t r, int64_t c) {
  return {v.data(), r, c, Device::cpu};
}

// F(theta) = L_Q(adapt_n(theta)), evaluated directly.
double meta_objective(CouplingFlow<double>& fs, CouplingFlow<double>& fq,
                      const std::vector<double>& theta, const TaskData<double>& task, int64_t n,
                      double alpha) {
  auto t0 = Buffer<double>::from_host(theta, Device::cpu);
  Buffer<double> tn(theta.size(), Device::cpu);
  MamlWorkspace<double> ws;
  inner_adapt<double>(fs, t0, task.xs, task.cs, n, alpha, tn, ws);
  return fq.forward(tn, task.xq, task.cq);
}

}  // namespace

TEST(Maml, SecondOrderMetaGradientMatchesCentralDifferences) {
  const auto cfg = small_config();
  CouplingFlow<double> fs(cfg, Device::cpu), fq(cfg, Device::cpu);
  const int64_t Ns = 12, Nq = 10, D = cfg.dim, C = cfg.cond_dim;
  auto xs = randn<double>(Ns * D, 1), cs = randn<double>(Ns * C, 2);
  auto xq = randn<double>(Nq * D, 3, 1.5), cq = randn<double>(Nq * C, 4);
  TaskData<double> task{cmat(xs, Ns, D), cmat(cs, Ns, C), cmat(xq, Nq, D), cmat(cq, Nq, C)};
  const auto theta = random_params(fs, 5, 0.3).to_host();
  const double alpha = 0.05;  // large enough that the second-order terms matter
  for (int64_t n : {1, 2, 3}) {
    auto t0 = Buffer<double>::from_host(theta, Device::cpu);
    Buffer<double> g2(theta.size(), Device::cpu), g1(theta.size(), Device::cpu);
    MamlWorkspace<double> ws;
    meta_gradient<double>(fs, fq, t0, task, n, alpha, true, g2, ws);
    meta_gradient<double>(fs, fq, t0, task, n, alpha, false, g1, ws);
    std::vector<double> fd(theta.size());
    const double h = 1e-6;
    for (size_t i = 0; i < theta.size(); ++i) {
      auto tp = theta, tm = theta;
      tp[i] += h, tm[i] -= h;
      fd[i] = (meta_objective(fs, fq, tp, task, n, alpha) -
               meta_objective(fs, fq, tm, task, n, alpha)) / (2 * h);
    }
    const double err2 = rel_error(g2.to_host(), fd), err1 = rel_error(g1.to_host(), fd);
    std::printf("n_inner %ld: second order rel. error %.2e, first order %.2e\n", long(n), err2,
                err1);
    EXPECT_LT(err2, 1e-6) << "n_inner " << n;
    // First-order MAML drops the -alpha*H terms: visibly different at this alpha.
    EXPECT_GT(err1, 1e-3) << "n_inner " << n;
  }
}

// The trainer's first MAML step: the meta-gradient it hands to Adam is the one assembled by
// hand (support gradient, inner step, query gradient, support HVP) on the same episode.
TEST(Maml, TrainerStepUsesTheSecondOrderMetaGradient) {
  FlowConfig fc;
  fc.dim = 6, fc.cond_dim = 4, fc.n_blocks = 2, fc.hidden = 8, fc.seed = 9;
  const int64_t n_images = 12, H = 3, W = 3, HW = H * W;
  auto rows = randn<float>(n_images * HW * fc.dim, 11);
  PatchBank bank(rows, n_images, fc.dim, H, W, fc.cond_dim, Device::cpu);
  TrainSettings ts;
  ts.mode = TrainMode::maml, ts.second_order = true, ts.meta_batch = 1, ts.n_inner = 1;
  ts.inner_lr = 0.3, ts.meta_lr = 1e-3, ts.support = 3, ts.query = 4, ts.positions = 5;
  // The trainer's inner step is inner_lr on the per-dimension NLL: alpha / D on the sum.
  const float alpha = float(ts.inner_lr) / float(fc.dim);
  ts.n_final = 0;
  std::vector<int64_t> images;
  for (int64_t i = 0; i < n_images; ++i) images.push_back(i);
  TapTrainer trainer(fc, ts, Device::cpu);
  CouplingFlow<float> flow(fc, Device::cpu), flow2(fc, Device::cpu);
  const auto theta_host = random_params(flow, 13, 0.2).to_host();

  std::vector<float> observed;
  trainer.set_gradient_observer([&](int64_t step, const std::vector<float>& g) {
    if (step == 0) observed = g;
  });
  EpisodeScheduler source(images, {}, ts.support, ts.query, 42);
  auto theta = Buffer<float>::from_host(theta_host, Device::cpu);
  trainer.train(theta, bank, source, 4, {});  // 1 task * (1 + 1 + 2) evals = one step

  // By hand, replaying the scheduler from the same seed.
  EpisodeScheduler replay(images, {}, ts.support, ts.query, 42);
  const Episode ep = replay.next_task();
  PatchBatch S, Q;
  bank.gather(replay.rows(ep.support, HW, ts.positions), S);
  bank.gather(replay.rows(ep.query, HW, ts.positions), Q);
  auto t0 = Buffer<float>::from_host(theta_host, Device::cpu);
  const int64_t P = flow.n_params();
  Buffer<float> gS(P, Device::cpu), t1(P, Device::cpu), v(P, Device::cpu), g2(P, Device::cpu),
      hv(P, Device::cpu);
  flow.grad_at(t0, S.xv(), S.cv(), gS);
  auto t1h = theta_host;
  auto gSh = gS.to_host();
  for (int64_t i = 0; i < P; ++i) t1h[i] -= alpha * gSh[i];
  t1.copy_from(t1h.data(), Device::cpu, P);
  flow2.grad_at(t1, Q.xv(), Q.cv(), v);
  flow.hvp_at(t0, S.xv(), S.cv(), v, g2, hv);
  auto vh = v.to_host(), hvh = hv.to_host();
  std::vector<float> by_hand(P), first_order = vh;
  for (int64_t i = 0; i < P; ++i) by_hand[i] = vh[i] - alpha * hvh[i];
  ASSERT_EQ(observed.size(), size_t(P));
  EXPECT_LT(rel_error(observed, by_hand), 1e-6);
  EXPECT_GT(rel_error(first_order, by_hand), 1e-3) << "the HVP term must matter here";
}

TEST(Maml, SameSeedSameResultBitForBit) {
  FlowConfig fc;
  fc.dim = 6, fc.cond_dim = 4, fc.n_blocks = 2, fc.hidden = 8, fc.seed = 9;
  const int64_t n_images = 10, HW = 4;
  auto rows = randn<float>(n_images * HW * fc.dim, 21);
  PatchBank bank(rows, n_images, fc.dim, 2, 2, fc.cond_dim, Device::cpu);
  TrainSettings ts;
  ts.support = 3, ts.query = 3, ts.meta_batch = 2, ts.positions = 3, ts.n_final = 2;
  std::vector<int64_t> images;
  for (int64_t i = 0; i < n_images; ++i) images.push_back(i);
  auto run = [&] {
    TapTrainer trainer(fc, ts, Device::cpu);
    EpisodeScheduler source(images, {}, ts.support, ts.query, 7);
    auto theta0 = trainer.init_params(bank, source);
    trainer.train(theta0, bank, source, 60);
    Buffer<float> theta(trainer.n_params(), Device::cpu);
    trainer.adapt(theta0, theta, bank, source);
    return theta.to_host();
  };
  const auto a = run(), b = run();
  EXPECT_EQ(a, b);
}

// A learning rate that blows the flow up: the guard restores the last good parameters and
// halves the rate; the third time it stops with a clear error, parameters left finite.
TEST(Maml, DivergenceIsDetectedRestoredAndReported) {
  FlowConfig fc;
  fc.dim = 6, fc.cond_dim = 4, fc.n_blocks = 2, fc.hidden = 8, fc.seed = 9;
  const int64_t n_images = 10, HW = 4;
  auto rows = randn<float>(n_images * HW * fc.dim, 31);
  PatchBank bank(rows, n_images, fc.dim, 2, 2, fc.cond_dim, Device::cpu);
  std::vector<int64_t> images;
  for (int64_t i = 0; i < n_images; ++i) images.push_back(i);
  for (TrainMode mode : {TrainMode::plain, TrainMode::maml}) {
    TrainSettings ts;
    ts.mode = mode, ts.support = 3, ts.query = 3, ts.meta_batch = 2, ts.positions = 0;
    ts.meta_lr = 1e7;  // every Adam step moves each parameter by ~1e7
    ts.inner_lr = 1e3;
    TapTrainer trainer(fc, ts, Device::cpu);
    EpisodeScheduler source(images, {}, ts.support, ts.query, 1);
    auto theta = trainer.init_params(bank, source);
    const auto start = theta.to_host();
    try {
      trainer.train(theta, bank, source, 200);
      ADD_FAILURE() << name_of(mode) << ": a learning rate of 1e7 did not diverge";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("training diverged 3 times"), std::string::npos)
          << e.what();
    }
    for (float v : theta.to_host()) ASSERT_TRUE(std::isfinite(v)) << name_of(mode);
    // The first divergence comes before any snapshot: the parameters are the starting ones.
    EXPECT_EQ(theta.to_host(), start) << name_of(mode);
  }
}

// train.batched_tasks: the meta-batch as one batched pass (the CUDA-graph path's layout) trains
// to exactly the parameters of the task-by-task loop on the CPU, second and first order.
TEST(Maml, BatchedTasksTrainLikeTasksOneByOne) {
  FlowConfig fc;
  fc.dim = 6, fc.cond_dim = 4, fc.n_blocks = 2, fc.hidden = 8, fc.seed = 9;
  const int64_t n_images = 12, HW = 4;
  auto rows = randn<float>(n_images * HW * fc.dim, 41);
  PatchBank bank(rows, n_images, fc.dim, 2, 2, fc.cond_dim, Device::cpu);
  std::vector<int64_t> images;
  for (int64_t i = 0; i < n_images; ++i) images.push_back(i);
  for (bool second_order : {true, false}) {
    auto run = [&](bool batched) {
      TrainSettings ts;
      ts.mode = TrainMode::maml, ts.second_order = second_order,
      ts.batched_tasks = batched ? TaskBatching::on : TaskBatching::off;
      ts.support = 3, ts.query = 2, ts.meta_batch = 3, ts.n_inner = 2, ts.positions = 3;
      ts.inner_lr = 0.3, ts.n_final = 0;
      TapTrainer trainer(fc, ts, Device::cpu);
      EpisodeScheduler source(images, {}, ts.support, ts.query, 5);
      auto theta = trainer.init_params(bank, source);
      const auto st = trainer.train(theta, bank, source, 90);
      EXPECT_GT(st.steps, 2);
      return theta.to_host();
    };
    const auto batched = run(true), one_by_one = run(false);
    EXPECT_EQ(batched, one_by_one) << (second_order ? "second order" : "first order");
  }
}
