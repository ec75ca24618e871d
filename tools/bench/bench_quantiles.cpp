// Quartile throughput (scores/s) of the CPU reference and the CUDA radix-sort path.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"
#include "kernels/quantiles.h"

namespace {

// Score-like values: NLLs around a mode with a heavier right tail, and 1% NaN so that the
// filtering step is exercised as it is in a real refinement round.
std::vector<float> synthetic_scores(int64_t n) {
  std::mt19937_64 rng(12345);
  std::gamma_distribution<float> nll(4.0f, 2.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> scores(static_cast<std::size_t>(n));
  for (float& v : scores)
    v = unit(rng) < 0.01f ? std::numeric_limits<float>::quiet_NaN() : nll(rng);
  return scores;
}

void BM_Quantiles_CpuQuartiles(benchmark::State& state) {
  const int64_t n = state.range(0);
  const std::vector<float> scores = synthetic_scores(n);
  for (auto _ : state) {
    mirad::QuartileStats stats = mirad::quartiles_cpu(scores.data(), n);
    benchmark::DoNotOptimize(stats);
  }
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_Quantiles_CudaQuartiles(benchmark::State& state) {
  if (!mirad::cuda_available()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const int64_t n = state.range(0);
  mirad::Buffer<float> d_scores =
      mirad::Buffer<float>::from_host(synthetic_scores(n), mirad::Device::cuda);
  const mirad::Stream stream{};
  // Kept across iterations, as the refinement loop keeps it: the timing is of the quantile
  // work, not of cudaMalloc.
  mirad::QuantileWorkspace workspace;
  for (auto _ : state) {
    mirad::QuartileStats stats = mirad::quartiles_cuda(d_scores.data(), n, stream, workspace);
    // quartiles_cuda already waits for its own result; syncing here as well keeps the time
    // honest should that ever change.
    mirad::mem::synchronize(stream);
    benchmark::DoNotOptimize(stats);
  }
  state.SetItemsProcessed(state.iterations() * n);
}

BENCHMARK(BM_Quantiles_CpuQuartiles)
    ->Arg(4096)
    ->Arg(65536)
    ->Arg(1 << 20)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Quantiles_CudaQuartiles)
    ->Arg(4096)
    ->Arg(65536)
    ->Arg(1 << 20)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
