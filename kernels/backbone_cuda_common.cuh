// Launch helpers shared by the backbone's CUDA kernels (kernels/backbone_ops_cuda.cu for
// float32 NCHW, kernels/backbone_ops_half_cuda.cu for 16-bit NHWC): block size, grid-stride
// loops and warp reductions. Included by .cu files only.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/device.h"

namespace mirad::bbops::cuda_common {

constexpr int kBlock = 256;
constexpr int kWarpsPerBlock = kBlock / 32;

inline cudaStream_t to_cuda(Stream s) { return static_cast<cudaStream_t>(s.handle); }

// Blocks for a grid-stride loop over n items of per_block each: enough to fill any current
// GPU, capped so that huge tensors loop instead of launching millions of blocks.
inline int grid_for(int64_t n, int64_t per_block = kBlock) {
  return static_cast<int>(std::min<int64_t>((n + per_block - 1) / per_block, 65535 * 8));
}
// Blocks for one warp per row.
inline int warp_grid(int64_t rows) { return grid_for(rows, kWarpsPerBlock); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

}  // namespace mirad::bbops::cuda_common

#define GRID_STRIDE(i, n)                                                   \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)
