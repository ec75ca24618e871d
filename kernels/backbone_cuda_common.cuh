// Launch helpers shared by the backbone's CUDA kernels (kernels/backbone_ops_cuda.cu for
// float32 NCHW, kernels/backbone_ops_half_cuda.cu for 16-bit NHWC): block size, grid sizes and
// the grid-stride loop (core/cuda_launch.cuh has the rest). Included by .cu files only.
#pragma once

#include <cstdint>

#include "core/cuda_launch.cuh"

namespace mirad::bbops::cuda_common {

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / 32;

using cuda::to_cuda;
using cuda::warp_max;
using cuda::warp_sum;

// Blocks for a grid-stride loop over n items of per_block each: enough to fill any current
// GPU, capped so that huge tensors loop instead of launching millions of blocks. The cap is
// fixed, not per SM as elsewhere: these kernels were validated with it.
inline int grid_for(int64_t n, int64_t per_block = kBlock) {
  return cuda::grid_capped(n, per_block, 65535 * 8);
}
// Blocks for one warp per row.
inline int warp_grid(int64_t rows) { return grid_for(rows, kWarpsPerBlock); }

}  // namespace mirad::bbops::cuda_common

#define GRID_STRIDE(i, n)                                                   \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)
