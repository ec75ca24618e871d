// Benchmarks of one Adam step over 1M and 16M float parameters, CPU and CUDA.
// Bytes processed count the memory traffic of the fused update: read p, g, m, v and write
// p, m, v (7 floats per parameter), plus one more read of g when the finite check is on.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "engine/flow/optimizer.h"

namespace {

using mirad::Buffer;
using mirad::Device;

void adam_step(benchmark::State& state, Device device) {
  const int64_t n = state.range(0);
  const bool check_finite = state.range(1) != 0;
  if (device == Device::cuda && !mirad::cuda_available()) {
    state.SkipWithError("no CUDA device available");
    return;
  }
  auto opt = mirad::make_optimizer<float>(
      {{"type", "adam"}, {"lr", 1e-4}, {"check_finite", check_finite}}, n, device);
  // Small constant values keep the parameters finite and away from denormals for any
  // number of iterations.
  auto params = Buffer<float>::from_host(std::vector<float>(n, 0.5f), device);
  auto grads = Buffer<float>::from_host(std::vector<float>(n, 1e-3f), device);
  for (auto _ : state) {
    opt->step(params.data(), grads.data(), n, {});
    // Synchronise every iteration so the time is the step's, not the launch's.
    mirad::mem::synchronize({});
  }
  const int64_t floats_moved = 7 + (check_finite ? 1 : 0);
  state.SetBytesProcessed(state.iterations() * n * floats_moved * int64_t(sizeof(float)));
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_AdamStepCpu(benchmark::State& state) {
  adam_step(state, Device::cpu);
}
void BM_AdamStepCuda(benchmark::State& state) {
  adam_step(state, Device::cuda);
}

// Args: {n_params, check_finite}.
BENCHMARK(BM_AdamStepCpu)
    ->ArgNames({"n", "check"})
    ->Args({1 << 20, 1})
    ->Args({1 << 24, 1})
    ->Args({1 << 20, 0})
    ->Args({1 << 24, 0})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AdamStepCuda)
    ->ArgNames({"n", "check"})
    ->Args({1 << 20, 1})
    ->Args({1 << 24, 1})
    ->Args({1 << 20, 0})
    ->Args({1 << 24, 0})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
