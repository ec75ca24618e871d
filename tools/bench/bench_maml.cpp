// MAML outer-step benchmarks at the default taps' sizes (D = 40, 112): one meta-step of B = 4
// tasks, |S| = |Q| = 512 rows each (8 images x 64 positions), n_inner = 1, first vs second
// order; and the machine's SGEMM peak (OpenBLAS, 1024^3), the physical limit the CPU figures
// are compared against.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <random>

#include "engine/patch_bank.h"
#include "engine/tap_trainer.h"
#include "tools/bench/random_bank.h"
#include "kernels/flow_ops_cpu.h"
#include "host/episode_scheduler.h"

using namespace mirad;

namespace {

void BM_MamlStep(benchmark::State& state, Device dev) {
  if (dev == Device::cuda && !cuda_available()) return state.SkipWithError("no CUDA device");
  const int64_t D = state.range(0);
  const bool second = state.range(1) != 0;
  FlowConfig f;
  f.dim = D;
  auto [bank, images] = bench::random_bank(D, f.cond_dim, dev);
  TrainSettings ts;
  ts.mode = "maml";
  ts.second_order = second;
  ts.n_final = 0;
  TapTrainer tr(f, ts, dev);
  EpisodeScheduler src(images, {}, ts.support, ts.query, 5);
  auto theta = tr.init_params(bank, src);
  DetectorConfig c;
  c.train = ts;
  const int64_t one_step = c.evals_per_step();
  const uint64_t f0 = cpu_gemm_flops().load();
  for (auto _ : state) tr.train(theta, bank, src, one_step);
  // The GEMM work actually done (CPU: counted by the ops; the same on CUDA).
  state.counters["GFLOP/s"] = benchmark::Counter(double(cpu_gemm_flops().load() - f0) / 1e9,
                                                 benchmark::Counter::kIsRate);
  // Rows through the flow per step: B tasks x (support + query) x 512.
  state.SetItemsProcessed(state.iterations() * 4 * 2 * 512);
}

// Training steps at the default sizes, CUDA graph replay against the eager loop: args D, mode
// (0 plain, 1 second-order MAML), graphs (0/1), batched tasks (0/1; MAML: the B = 4 tasks in
// one batched pass or one after another). Time per step.
void BM_TrainSteps(benchmark::State& state) {
  if (!cuda_available()) return state.SkipWithError("no CUDA device");
  const int64_t D = state.range(0);
  FlowConfig f;
  f.dim = D;
  auto [bank, images] = bench::random_bank(D, f.cond_dim, Device::cuda);
  TrainSettings ts;
  ts.mode = state.range(1) ? "maml" : "plain";
  ts.cuda_graphs = state.range(2) != 0;
  ts.batched_tasks = state.range(3) != 0;
  ts.n_final = 0;
  TapTrainer tr(f, ts, Device::cuda);
  EpisodeScheduler src(images, {}, ts.support, ts.query, 5);
  auto theta = tr.init_params(bank, src);
  DetectorConfig c;
  c.train = ts;
  const int64_t steps = 40;
  for (auto _ : state) tr.train(theta, bank, src, steps * c.evals_per_step());
  // Launches per step (graph replay): kernels, of which cuBLAS's (library kernels the runtime
  // cannot name: unnamed/step; see GraphCensus), and copies; the eager loop launches the same
  // work one call at a time.
  const GraphCensus& g = tr.last_graph_census();
  state.counters["kernels/step"] = double(g.kernels);
  state.counters["gemm/step"] = double(g.gemm_kernels);
  state.counters["unnamed/step"] = double(g.unnamed_kernels);
  state.counters["copies/step"] = double(g.copies + g.memsets);
  state.counters["steps/s"] =
      benchmark::Counter(double(steps) * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_SgemmPeak(benchmark::State& state) {
  const int n = int(state.range(0));
  std::vector<float> a(size_t(n) * n, 1.0f), b(size_t(n) * n, 0.5f), c(size_t(n) * n);
  for (auto _ : state)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(),
                n, 0.0f, c.data(), n);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK_CAPTURE(BM_MamlStep, cpu, Device::cpu)
    ->Args({40, 0})->Args({40, 1})->Args({112, 0})->Args({112, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_MamlStep, cuda, Device::cuda)
    ->Args({40, 0})->Args({40, 1})->Args({112, 0})->Args({112, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_TrainSteps)->Name("BM_TrainSteps/cuda")
    ->Args({40, 0, 0, 0})->Args({40, 0, 1, 0})->Args({112, 0, 0, 0})->Args({112, 0, 1, 0})
    ->Args({40, 1, 0, 0})->Args({40, 1, 1, 0})->Args({40, 1, 1, 1})
    ->Args({112, 1, 0, 0})->Args({112, 1, 1, 0})->Args({112, 1, 1, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_SgemmPeak)->Name("BM_SgemmPeak/cpu")->Arg(1024)->Unit(benchmark::kMillisecond)
    ->UseRealTime();
