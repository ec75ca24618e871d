// Launch geometry, stream conversion and warp reductions shared by every CUDA kernel file.
// Included by .cu files only (it needs nvcc for the __device__ helpers).
#pragma once

#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "core/device.h"

namespace mirad::cuda {

inline cudaStream_t to_cuda(Stream s) { return static_cast<cudaStream_t>(s.handle); }

// Multiprocessor count of the calling thread's current device. Queried once per device and
// cached (core/cuda_launch.cu): launchers call it on every launch, and a device attribute query
// there costs more than many small kernels do.
int sm_count();

// Blocks of per_block items each that cover n items (0 for n = 0).
constexpr int64_t blocks_for(int64_t n, int64_t per_block) { return (n + per_block - 1) / per_block; }

// Grid for a grid-stride loop over n items: enough blocks to cover them, but no more than
// blocks_per_sm resident blocks per SM, so that huge sizes loop instead of over-launching; at
// least one block, so an empty launch stays a valid one. The cap changes which block does
// which item, and with it the order of any per-block partial sums: each launcher keeps the
// cap it was tuned and tested with.
inline int grid_per_sm(int64_t n, int64_t per_block, int blocks_per_sm) {
  const int64_t cap = int64_t(sm_count()) * blocks_per_sm;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks_for(n, per_block), cap)));
}

// Grid with a fixed, device-independent cap (no minimum: n = 0 gives 0 blocks).
inline int grid_capped(int64_t n, int64_t per_block, int64_t max_blocks) {
  return static_cast<int>(std::min<int64_t>(blocks_for(n, per_block), max_blocks));
}

// Grid-stride indices in 64 bits: blockIdx.x * blockDim.x alone would wrap at 2^31 entries.
__device__ __forceinline__ int64_t first_index() {
  return int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_stride() {
  return int64_t(blockDim.x) * gridDim.x;
}

// Butterfly reductions over a full warp: every lane ends with the result, in an order fixed by
// the lane pattern (so results are deterministic).
__device__ __forceinline__ float warp_sum(float v) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

}  // namespace mirad::cuda
