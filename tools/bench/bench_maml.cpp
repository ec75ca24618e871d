// MAML outer-step benchmarks at the default taps' sizes (D = 40, 112): one meta-step of B = 4
// tasks, |S| = |Q| = 512 rows each (8 images x 64 positions), n_inner = 1, first vs second
// order; and the machine's SGEMM peak (OpenBLAS, 1024^3), the physical limit the CPU figures
// are compared against.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "engine/training/cuda_graph.h"
#include "engine/training/patch_bank.h"
#include "engine/training/tap_trainer.h"
#include "tools/bench/random_bank.h"
#include "kernels/flow_ops_cpu.h"
#ifdef MIRAD_HAVE_CUDA
#include "kernels/flow_ops_cuda.h"
#endif
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
  ts.mode = TrainMode::maml;
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
// Training settings of the step benchmarks: no final adaptation, batched tasks on or off.
TrainSettings step_settings(TrainMode mode, bool batched) {
  TrainSettings ts;
  ts.mode = mode;
  ts.batched_tasks = batched ? TaskBatching::on : TaskBatching::off;
  ts.n_final = 0;
  return ts;
}

void BM_TrainSteps(benchmark::State& state) {
  if (!cuda_available()) return state.SkipWithError("no CUDA device");
  const int64_t D = state.range(0);
  FlowConfig f;
  f.dim = D;
  auto [bank, images] = bench::random_bank(D, f.cond_dim, Device::cuda);
  TrainSettings ts = step_settings(state.range(1) ? TrainMode::maml : TrainMode::plain, state.range(3) != 0);
  ts.cuda_graphs = state.range(2) != 0;
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

#ifdef MIRAD_HAVE_CUDA
// Issue 8's breakdown of a graph-captured MAML step (second order, B = 4 tasks of 512 + 512
// rows): the step against the pure GEMM time of its work. The step's cuBLAS calls are recorded
// from one eager step (the same shapes the captured step runs), captured alone into a graph on
// scratch operands of those shapes, and replayed; the benchmark's time is that replay. Counters:
// step_ms (the captured training step, host staging included), gemm_ms, step/gemm (the target
// is at most 3), and the step's launches (kernels, of which cuBLAS's). Args: D, batched (0/1).
void BM_MamlStepGemmShare(benchmark::State& state) {
  if (!cuda_available()) return state.SkipWithError("no CUDA device");
  const int64_t D = state.range(0);
  FlowConfig f;
  f.dim = D;
  auto [bank, images] = bench::random_bank(D, f.cond_dim, Device::cuda);
  const TrainSettings ts = step_settings(TrainMode::maml, state.range(1) != 0);
  DetectorConfig c;
  c.train = ts;
  const int64_t one_step = c.evals_per_step();
  // The step's GEMMs, from the eager loop after a warm-up step.
  std::vector<GemmCall> calls;
  {
    TrainSettings eager = ts;
    eager.cuda_graphs = false;
    TapTrainer tr(f, eager, Device::cuda);
    EpisodeScheduler src(images, {}, ts.support, ts.query, 5);
    auto theta = tr.init_params(bank, src);
    tr.train(theta, bank, src, one_step);
    gemm_recorder() = &calls;
    tr.train(theta, bank, src, one_step);
    gemm_recorder() = nullptr;
  }
  // The captured step's time per step (after a warm-up call that captures the graph).
  TapTrainer tr(f, ts, Device::cuda);
  EpisodeScheduler src(images, {}, ts.support, ts.query, 5);
  auto theta = tr.init_params(bank, src);
  tr.train(theta, bank, src, 5 * one_step);
  constexpr int64_t kSteps = 50;
  const auto t0 = std::chrono::steady_clock::now();
  tr.train(theta, bank, src, kSteps * one_step);
  const double step_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
      double(kSteps);
  const GraphCensus census = tr.last_graph_census();
  // Scratch operands big enough for every call, and the GEMMs alone in one graph.
  int64_t a_max = 1, b_max = 1, c_max = 1;
  for (const GemmCall& g : calls) {
    const int64_t a_rows = g.trans_a ? g.K : g.M, b_rows = g.trans_b ? g.N : g.K;
    a_max = std::max(a_max, (g.batch - 1) * g.sa + a_rows * g.lda);
    b_max = std::max(b_max, (g.batch - 1) * g.sb + b_rows * g.ldb);
    c_max = std::max(c_max, (g.batch - 1) * g.sc + g.M * g.ldc);
  }
  Buffer<float> A(a_max, Device::cuda), B(b_max, Device::cuda), C(c_max, Device::cuda);
  A.zero(), B.zero(), C.zero();
  OwnedStream stream(Device::cuda);
  CudaFlowOps ops(stream.get());
  auto body = [&] {
    for (const GemmCall& g : calls) {
      if (g.batch == 1)
        ops.gemm(g.trans_a, g.trans_b, g.M, g.N, g.K, 1.f, A.data(), g.lda, B.data(), g.ldb, 1.f,
                 C.data(), g.ldc);
      else
        ops.gemm_batched(g.trans_a, g.trans_b, g.M, g.N, g.K, 1.f, A.data(), g.lda, g.sa,
                         B.data(), g.ldb, g.sb, 1.f, C.data(), g.ldc, g.sc, g.batch);
    }
  };
  body();  // cuBLAS's first calls pick kernels and may allocate: not inside the capture
  mem::synchronize(stream.get());
  StreamGraph gemms;
  gemms.capture(stream.get(), body);
  for (auto _ : state) {
    gemms.launch(stream.get());
    mem::synchronize(stream.get());
  }
  // The replay's own time per iteration, from a separate timed loop (the state's is reported too).
  constexpr int kReplays = 200;
  const auto g0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kReplays; ++i) gemms.launch(stream.get());
  mem::synchronize(stream.get());
  const double gemm_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - g0).count() /
      kReplays;
  state.counters["step_ms"] = step_ms;
  state.counters["gemm_ms"] = gemm_ms;
  state.counters["step/gemm"] = step_ms / gemm_ms;
  state.counters["gemm_calls"] = double(calls.size());
  state.counters["kernels/step"] = double(census.kernels);
  state.counters["cublas/step"] = double(census.unnamed_kernels + census.gemm_kernels);
}
#endif

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
#ifdef MIRAD_HAVE_CUDA
BENCHMARK(BM_MamlStepGemmShare)->Name("BM_MamlStepGemmShare/cuda")
    ->Args({40, 0})->Args({40, 1})->Args({112, 0})->Args({112, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
#endif
BENCHMARK(BM_SgemmPeak)->Name("BM_SgemmPeak/cpu")->Arg(1024)->Unit(benchmark::kMillisecond)
    ->UseRealTime();
