// Batched tasks on CUDA (strided-batched cuBLAS GEMMs and the batched bias kernels) against the
// CPU: B tasks in one pass give each task's NLL, gradient and HVP as the float64 CPU reference
// computes for that task alone, and the batched MAML meta-gradient matches the task-by-task one
// on the device. The trainer's step-0 meta-gradient with and without batched tasks agrees too.
// Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "cuda_diff.h"
#include "engine/flow/flow.h"
#include "engine/training/maml.h"
#include "engine/training/patch_bank.h"
#include "engine/training/tap_trainer.h"
#include "flow_test_util.h"
#include "host/episode_scheduler.h"

using namespace mirad;
using mirad::test::randn;
using mirad::test::normalised_error;

namespace {

FlowConfig tap_config(int64_t D) {
  FlowConfig f;
  f.dim = D, f.n_blocks = 4, f.seed = 8;  // cond_dim 64, hidden 2D: the default taps' flows
  return f;
}

// 24 random images of 8 x 8 positions on the device, for the trainer tests.
struct TrainData {
  PatchBank bank;
  std::vector<int64_t> images;
  explicit TrainData(const FlowConfig& f)
      : bank(randn<float>(24 * 64 * f.dim, 7), 24, f.dim, 8, 8, f.cond_dim, Device::cuda),
        images(24) {
    for (int64_t i = 0; i < 24; ++i) images[i] = i;
  }
};

template <typename T>
std::vector<T> cast(const std::vector<double>& a) {
  return std::vector<T>(a.begin(), a.end());
}

}  // namespace

TEST(CudaFlowTasks, BatchedMatchesEachTaskOnTheCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (int64_t D : {40, 112}) {
    const FlowConfig f = tap_config(D);
    const int64_t B = 4, n = 129, C = f.cond_dim;
    CouplingFlow<double> ref(f, Device::cpu);
    CouplingFlow<float> gpu(f, Device::cuda);
    gpu.set_tasks(B);
    const int64_t P = ref.n_params();
    std::vector<double> p, v;
    for (int64_t b = 0; b < B; ++b) {
      auto pb = mirad::test::random_params(ref, 50 + b, 0.3 / std::sqrt(double(D + C))).to_host();
      p.insert(p.end(), pb.begin(), pb.end());
    }
    v = randn<double>(B * P, 60, 0.1);
    auto x = randn<double>(B * n * D, 61), c = randn<double>(B * n * C, 62);
    auto pg = Buffer<float>::from_host(cast<float>(p), Device::cuda);
    auto vg = Buffer<float>::from_host(cast<float>(v), Device::cuda);
    auto xg = Buffer<float>::from_host(cast<float>(x), Device::cuda);
    auto cg = Buffer<float>::from_host(cast<float>(c), Device::cuda);
    MatrixView<const float> xv(xg.data(), B * n, D, Device::cuda), cv(cg.data(), B * n, C, Device::cuda);
    Buffer<float> g(B * P, Device::cuda), hv(B * P, Device::cuda);
    std::vector<float> nll;
    gpu.forward(pg, xv, cv, {}, &nll);
    gpu.hvp(pg, xv, cv, vg, g, hv);
    const auto g_host = g.to_host(), hv_host = hv.to_host();
    std::vector<double> nll_ref, g_ref, hv_ref;
    for (int64_t b = 0; b < B; ++b) {
      std::vector<double> pb(p.begin() + b * P, p.begin() + (b + 1) * P);
      std::vector<double> vb(v.begin() + b * P, v.begin() + (b + 1) * P);
      MatrixView<const double> xb(x.data() + b * n * D, n, D, Device::cpu),
          cb(c.data() + b * n * C, n, C, Device::cpu);
      std::vector<double> nb, gb(P), hb(P);
      ref.forward({pb.data(), P, Device::cpu}, xb, cb, {}, &nb);
      ref.hvp({pb.data(), P, Device::cpu}, xb, cb, {vb.data(), P, Device::cpu},
              {gb.data(), P, Device::cpu}, {hb.data(), P, Device::cpu});
      nll_ref.insert(nll_ref.end(), nb.begin(), nb.end());
      g_ref.insert(g_ref.end(), gb.begin(), gb.end());
      hv_ref.insert(hv_ref.end(), hb.begin(), hb.end());
    }
    const double e_nll = normalised_error(std::vector<double>(nll.begin(), nll.end()), nll_ref);
    const double e_g = normalised_error(std::vector<double>(g_host.begin(), g_host.end()), g_ref);
    const double e_h = normalised_error(std::vector<double>(hv_host.begin(), hv_host.end()), hv_ref);
    std::printf("D=%ld, %ld tasks of %ld rows: NLL rel. error %.3g, gradient %.3g, HVP %.3g\n",
                long(D), long(B), long(n), e_nll, e_g, e_h);
    // The unbatched CUDA flow's tolerances against the same float64 reference (test_cuda_flow).
    EXPECT_LT(e_nll, 1e-4);
    EXPECT_LT(e_g, 1e-3);
    EXPECT_LT(e_h, 1e-3);
  }
}

TEST(CudaFlowTasks, BatchedMetaGradientMatchesTaskByTask) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const FlowConfig f = tap_config(40);
  const int64_t B = 4, ns = 256, nq = 256, D = f.dim, C = f.cond_dim;
  CouplingFlow<float> s1(f, Device::cuda), q1(f, Device::cuda), sB(f, Device::cuda),
      qB(f, Device::cuda);
  sB.set_tasks(B), qB.set_tasks(B);
  for (auto* fl : {&s1, &q1, &sB, &qB}) fl->set_checks(FlowChecks::none());
  const int64_t P = s1.n_params();
  auto theta = mirad::test::random_params(s1, 3, 0.05).to_host();
  std::vector<float> thetaB;
  for (int64_t b = 0; b < B; ++b) thetaB.insert(thetaB.end(), theta.begin(), theta.end());
  auto xs = Buffer<float>::from_host(randn<float>(B * ns * D, 1), Device::cuda);
  auto cs = Buffer<float>::from_host(randn<float>(B * ns * C, 2), Device::cuda);
  auto xq = Buffer<float>::from_host(randn<float>(B * nq * D, 3), Device::cuda);
  auto cq = Buffer<float>::from_host(randn<float>(B * nq * C, 4), Device::cuda);
  auto t0 = Buffer<float>::from_host(theta, Device::cuda);
  auto t0B = Buffer<float>::from_host(thetaB, Device::cuda);
  Buffer<float> metaB(B * P, Device::cuda), meta(P, Device::cuda);
  MamlWorkspace<float> wsB, ws1;
  const float alpha = 1e-3f / float(D);
  TaskData<float> all{{xs.data(), B * ns, D, Device::cuda}, {cs.data(), B * ns, C, Device::cuda},
                      {xq.data(), B * nq, D, Device::cuda}, {cq.data(), B * nq, C, Device::cuda}};
  meta_gradient(sB, qB, VecView<const float>(t0B), all, 1, alpha, true, VecView<float>(metaB), wsB);
  const auto batched = metaB.to_host();
  for (int64_t b = 0; b < B; ++b) {
    TaskData<float> one{{xs.data() + b * ns * D, ns, D, Device::cuda},
                        {cs.data() + b * ns * C, ns, C, Device::cuda},
                        {xq.data() + b * nq * D, nq, D, Device::cuda},
                        {cq.data() + b * nq * C, nq, C, Device::cuda}};
    meta_gradient(s1, q1, VecView<const float>(t0), one, 1, alpha, true, VecView<float>(meta), ws1);
    const auto alone = meta.to_host();
    const double e = normalised_error(
        std::vector<float>(batched.begin() + b * P, batched.begin() + (b + 1) * P), alone);
    std::printf("task %ld: batched vs alone meta-gradient rel. error %.3g\n", long(b), e);
    EXPECT_LT(e, 1e-4) << "task " << b;
  }
}

TEST(CudaFlowTasks, TrainerStepBatchedOrNotGivesTheSameMetaGradient) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const FlowConfig f = tap_config(40);
  const TrainData data(f);
  const PatchBank& bank = data.bank;
  const std::vector<int64_t>& images = data.images;
  auto first_step = [&](bool batched, bool graphs) {
    TrainSettings ts;
    ts.mode = TrainMode::maml, ts.batched_tasks = batched ? TaskBatching::on : TaskBatching::off,
    ts.cuda_graphs = graphs;
    ts.support = 4, ts.query = 4, ts.meta_batch = 4, ts.positions = 16, ts.n_final = 0;
    TapTrainer tr(f, ts, Device::cuda);
    std::vector<float> g0;
    tr.set_gradient_observer([&](int64_t step, const std::vector<float>& g) {
      if (step == 0) g0 = g;
    });
    EpisodeScheduler src(images, {}, ts.support, ts.query, 11);
    auto theta = tr.init_params(bank, src);
    tr.train(theta, bank, src, 4 * 4);  // 4 tasks x (1 + 1 + 2) evaluations: one step
    return g0;
  };
  const auto ref = first_step(false, false);
  ASSERT_FALSE(ref.empty());
  for (bool graphs : {false, true}) {
    const auto got = first_step(true, graphs);
    const double e = normalised_error(got, ref);
    std::printf("batched tasks (graphs %d) vs task by task: step-0 meta-gradient rel. error %.3g\n",
                int(graphs), e);
    EXPECT_LT(e, 1e-4) << "graphs " << graphs;
  }
}

// The point of batching: one captured MAML step of B = 4 tasks launches far fewer kernels.
TEST(CudaFlowTasks, BatchedStepLaunchesFewerKernels) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const FlowConfig f = tap_config(40);
  const TrainData data(f);
  const PatchBank& bank = data.bank;
  const std::vector<int64_t>& images = data.images;
  auto census = [&](bool batched) {
    TrainSettings ts;
    ts.mode = TrainMode::maml, ts.batched_tasks = batched ? TaskBatching::on : TaskBatching::off,
    ts.cuda_graphs = true;
    ts.support = 4, ts.query = 4, ts.meta_batch = 4, ts.positions = 16, ts.n_final = 0;
    TapTrainer tr(f, ts, Device::cuda);
    EpisodeScheduler src(images, {}, ts.support, ts.query, 11);
    auto theta = tr.init_params(bank, src);
    tr.train(theta, bank, src, 2 * 4 * 4);
    return tr.last_graph_census();
  };
  const GraphCensus one_by_one = census(false), batched = census(true);
  std::printf("kernels per captured step: task by task %ld (GEMM %ld, unnamed %ld), batched %ld "
              "(GEMM %ld, unnamed %ld)\n", long(one_by_one.kernels), long(one_by_one.gemm_kernels),
              long(one_by_one.unnamed_kernels), long(batched.kernels), long(batched.gemm_kernels),
              long(batched.unnamed_kernels));
  EXPECT_GT(one_by_one.kernels, 0);
  // The flow's GEMMs and bias ops go from 4 launches to 1; only ActNorm/NLL stay per task.
  EXPECT_LT(2 * batched.kernels, one_by_one.kernels);
}
