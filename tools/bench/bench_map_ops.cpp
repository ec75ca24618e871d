// Throughput of the anomaly-map ops and the MAML dot product: row_topk_mean (fused-map image
// scores), gaussian_blur (anomaly-map smoothing) and vec::dot, CPU reference and CUDA.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"
#include "kernels/map_ops.h"
#include "kernels/vec_ops.h"

namespace {

// Patch-NLL-like values: a gamma bulk with a heavier right tail.
std::vector<float> synthetic_map(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::gamma_distribution<float> nll(4.0f, 2.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = nll(rng);
  return v;
}

bool skip_without_cuda(benchmark::State& state) {
  if (mirad::cuda_available()) return false;
  state.SkipWithError("no CUDA device");
  return true;
}

// Args: rows (images), cols (fused-map pixels); k = 1% of cols, as the hybrid score uses.
void BM_MapOps_RowTopkMean(benchmark::State& state, mirad::Device device) {
  if (device == mirad::Device::cuda && skip_without_cuda(state)) return;
  const int64_t rows = state.range(0), cols = state.range(1), k = std::max<int64_t>(1, cols / 100);
  const auto host = synthetic_map(rows * cols, 1);
  auto in = mirad::Buffer<float>::from_host(host, device);
  mirad::Buffer<float> topk(rows, device), mean(rows, device);
  for (auto _ : state) {
    mirad::mapops::row_topk_mean(rows, cols, k, in.data(), topk.data(), mean.data(), device);
    mirad::mem::synchronize({});
  }
  state.SetItemsProcessed(state.iterations() * rows * cols);
}

// Args: maps, side (square maps), sigma x 10.
void BM_MapOps_GaussianBlur(benchmark::State& state, mirad::Device device) {
  if (device == mirad::Device::cuda && skip_without_cuda(state)) return;
  const int64_t n = state.range(0), side = state.range(1);
  const float sigma = float(state.range(2)) / 10.f;
  auto in = mirad::Buffer<float>::from_host(synthetic_map(n * side * side, 2), device);
  mirad::Buffer<float> out(n * side * side, device);
  for (auto _ : state) {
    mirad::mapops::gaussian_blur(n, side, side, sigma, in.data(), out.data(), device);
    mirad::mem::synchronize({});
  }
  state.SetItemsProcessed(state.iterations() * n * side * side);
}

// Arg: vector length (a flow's parameter count is 1e5..1e7).
void BM_VecOps_Dot(benchmark::State& state, mirad::Device device) {
  if (device == mirad::Device::cuda && skip_without_cuda(state)) return;
  const int64_t n = state.range(0);
  auto x = mirad::Buffer<float>::from_host(synthetic_map(n, 3), device);
  auto y = mirad::Buffer<float>::from_host(synthetic_map(n, 4), device);
  mirad::Buffer<double> out(1, device);
  for (auto _ : state) {
    mirad::vec::dot(n, x.data(), y.data(), out.data(), device);
    mirad::mem::synchronize({});
  }
  state.SetBytesProcessed(state.iterations() * n * 2 * int64_t(sizeof(float)));
}

BENCHMARK_CAPTURE(BM_MapOps_RowTopkMean, cpu, mirad::Device::cpu)
    ->Args({16, 4096})
    ->Args({16, 65536})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MapOps_RowTopkMean, cuda, mirad::Device::cuda)
    ->Args({16, 4096})
    ->Args({16, 65536})
    ->Args({256, 65536})
    ->Args({4, 102400})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK_CAPTURE(BM_MapOps_GaussianBlur, cpu, mirad::Device::cpu)
    ->Args({1, 256, 40})
    ->Args({8, 256, 40})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MapOps_GaussianBlur, cuda, mirad::Device::cuda)
    ->Args({1, 256, 40})
    ->Args({8, 256, 40})
    ->Args({8, 1024, 160})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK_CAPTURE(BM_VecOps_Dot, cpu, mirad::Device::cpu)
    ->Arg(1 << 16)
    ->Arg(1 << 20)
    ->Arg(1 << 24)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_VecOps_Dot, cuda, mirad::Device::cuda)
    ->Arg(1 << 16)
    ->Arg(1 << 20)
    ->Arg(1 << 24)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
