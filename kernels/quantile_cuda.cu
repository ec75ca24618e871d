// CUDA quartiles: CUB drops the NaN scores into a separate buffer and radix-sorts that copy,
// then only the needed order statistics travel to the host, which interpolates them with the
// CPU reference's own function (kernels/quantile_cpu.cpp).

#include <algorithm>
#include <cstddef>
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_select.cuh>

#include "core/cuda_error.h"
#include "kernels/quantiles.h"

namespace mirad {
namespace {

// CUB wants its temp storage aligned; 256 bytes also keeps every key array on its own
// cache-line boundary inside the one workspace allocation.
constexpr std::size_t kWorkspaceAlignment = 256;

std::size_t align_up(std::size_t bytes) {
  return (bytes + kWorkspaceAlignment - 1) / kWorkspaceAlignment * kWorkspaceAlignment;
}

struct IsNotNan {
  __device__ bool operator()(float score) const { return !isnan(score); }
};

// A host pointer here would fault asynchronously inside CUB, far from the mistake.
void check_device_readable(const float* d_x) {
  cudaPointerAttributes attributes{};
  CUDA_CHECK_THROW(cudaPointerGetAttributes(&attributes, d_x));
  CHECK_INPUT(attributes.type != cudaMemoryTypeUnregistered,
              "quartiles_cuda: the scores must be in device memory, got an ordinary host "
              "pointer (use quartiles_cpu or copy them to the device)");
}

// CUB treats a null temp pointer as "report the size" and then does nothing, so a zero-byte
// request must still yield a real pointer.
void* cub_temp_storage(QuantileWorkspace& workspace, std::size_t bytes) {
  workspace.cub_temp.reserve_discard(std::max<std::size_t>(bytes, 1));
  return workspace.cub_temp.data();
}

QuartileStats quartiles_cuda_impl(const float* d_x, int64_t n, cudaStream_t stream,
                                  QuantileWorkspace& workspace) {
  const std::size_t count_bytes = align_up(sizeof(int64_t));
  const std::size_t key_bytes = align_up(static_cast<std::size_t>(n) * sizeof(float));
  workspace.keys.reserve_discard(count_bytes + 2 * key_bytes);
  std::byte* base = workspace.keys.data();
  auto* d_n_valid = reinterpret_cast<int64_t*>(base);
  auto* d_keys_a = reinterpret_cast<float*>(base + count_bytes);
  auto* d_keys_b = reinterpret_cast<float*>(base + count_bytes + key_bytes);

  // NaN first: radix sort would place NaNs at both ends (by sign bit), and the caller's array
  // must stay as it is, so the valid scores go to a buffer of our own.
  std::size_t select_bytes = 0;
  CUB_CHECK_THROW(cub::DeviceSelect::If(nullptr, select_bytes, d_x, d_keys_a, d_n_valid, n,
                                        IsNotNan{}, stream));
  CUB_CHECK_THROW(cub::DeviceSelect::If(cub_temp_storage(workspace, select_bytes), select_bytes,
                                        d_x, d_keys_a, d_n_valid, n, IsNotNan{}, stream));
  // The sort length is a host argument, so the count has to come back before the sort.
  int64_t n_valid = 0;
  CUDA_CHECK_THROW(
      cudaMemcpyAsync(&n_valid, d_n_valid, sizeof(n_valid), cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK_THROW(cudaStreamSynchronize(stream));
  CHECK_INPUT(n_valid > 0, "all {} scores are NaN", n);

  // DoubleBuffer lets CUB ping-pong between A and B instead of sorting in place; Current()
  // says which one holds the result.
  cub::DoubleBuffer<float> d_keys(d_keys_a, d_keys_b);
  constexpr int kBeginBit = 0, kEndBit = 8 * sizeof(float);
  std::size_t sort_bytes = 0;
  CUB_CHECK_THROW(cub::DeviceRadixSort::SortKeys(nullptr, sort_bytes, d_keys, n_valid, kBeginBit,
                                                 kEndBit, stream));
  CUB_CHECK_THROW(cub::DeviceRadixSort::SortKeys(cub_temp_storage(workspace, sort_bytes),
                                                 sort_bytes, d_keys, n_valid, kBeginBit, kEndBit,
                                                 stream));

  // Each quartile needs the adjacent pair x[lo], x[lo+1]: one small copy per quartile.
  QuantilePosition positions[3];
  float neighbours[3][2] = {};
  const float* d_sorted = d_keys.Current();
  for (int q = 0; q < 3; ++q) {
    positions[q] = quantile_position(n_valid, kQuartileProbabilities[q]);
    const std::size_t pair_bytes = (positions[q].hi - positions[q].lo + 1) * sizeof(float);
    CUDA_CHECK_THROW(cudaMemcpyAsync(neighbours[q], d_sorted + positions[q].lo, pair_bytes,
                                     cudaMemcpyDeviceToHost, stream));
  }
  CUDA_CHECK_THROW(cudaStreamSynchronize(stream));

  double values[3];
  for (int q = 0; q < 3; ++q) {
    // At the top (hi == lo) only one value was copied, and it is both neighbours.
    const float x_hi = positions[q].hi == positions[q].lo ? neighbours[q][0] : neighbours[q][1];
    values[q] = interpolate_quantile(neighbours[q][0], x_hi, positions[q].frac);
  }
  return make_quartile_stats(values[0], values[1], values[2], n_valid, n - n_valid);
}

}  // namespace

QuartileStats quartiles_cuda(const float* d_x, int64_t n, Stream stream,
                             QuantileWorkspace& workspace) {
  CHECK_INPUT(n >= 0, "score count {} is negative", n);
  CHECK_INPUT(n > 0, "quantiles of an empty score array");
  CHECK_THROW(d_x != nullptr);
  check_device_readable(d_x);
  return quartiles_cuda_impl(d_x, n, static_cast<cudaStream_t>(stream.handle), workspace);
}

QuartileStats quartiles_cuda(const float* d_x, int64_t n, Stream stream) {
  QuantileWorkspace workspace;
  return quartiles_cuda(d_x, n, stream, workspace);
}

}  // namespace mirad
