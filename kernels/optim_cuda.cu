// CUDA optimizer steps: one fused grid-stride kernel per update (params, gradient and moments
// touched once each), plus the non-finite gradient count that gates it.

#include <algorithm>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/optim_math.h"

namespace mirad::optim {
namespace {

constexpr int kBlock = 256;  // a multiple of the warp size: the count kernel relies on it

// Up to 8 resident blocks per SM saturate memory bandwidth; the grid-stride loop covers the
// rest, so huge buffers do not pay for launching millions of blocks.
int grid_for(int64_t n) { return cuda::grid_per_sm(n, kBlock, 8); }

__device__ __forceinline__ bool gate_closed(const unsigned long long* gate) {
  return gate != nullptr && gate[0] != 0;
}

__global__ void count_nonfinite_kernel(int64_t n, const float* __restrict__ g,
                                       unsigned long long* status) {
  // Iterate per warp, not per thread, so all 32 lanes stay in the loop together and one
  // ballot aggregates them: an all-NaN gradient then costs one atomic per warp, not per entry.
  const int lane = threadIdx.x & 31;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t base = int64_t(blockIdx.x) * blockDim.x + (threadIdx.x - lane); base < n;
       base += stride) {
    const int64_t i = base + lane;
    const bool bad = i < n && !isfinite(g[i]);
    const unsigned mask = __ballot_sync(0xffffffffu, bad);
    if (mask != 0 && lane == 0) {
      atomicAdd(&status[0], static_cast<unsigned long long>(__popc(mask)));
      // ~index turns "smallest index" into atomicMax, and a zeroed word into "none yet".
      atomicMax(&status[1], ~static_cast<unsigned long long>(base + __ffs(mask) - 1));
    }
  }
}

__global__ void sgd_step_kernel(int64_t n, float* __restrict__ p, const float* __restrict__ g,
                                float* __restrict__ momentum_buffer, SgdCoeffs<float> c,
                                const unsigned long long* gate) {
  if (gate_closed(gate)) return;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    sgd_update(p[i], g[i], momentum_buffer ? momentum_buffer + i : nullptr, c);
}

__global__ void adam_step_kernel(int64_t n, float* __restrict__ p, const float* __restrict__ g,
                                 float* __restrict__ m, float* __restrict__ v, AdamCoeffs<float> c,
                                 const unsigned long long* gate) {
  if (gate_closed(gate)) return;
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    adam_update(p[i], g[i], m[i], v[i], c);
}

}  // namespace

void count_nonfinite_cuda(int64_t n, const float* g, unsigned long long* status, Stream stream) {
  auto s = static_cast<cudaStream_t>(stream.handle);
  CUDA_CHECK_THROW(cudaMemsetAsync(status, 0, 2 * sizeof(unsigned long long), s));
  if (n == 0) return;
  count_nonfinite_kernel<<<grid_for(n), kBlock, 0, s>>>(n, g, status);
  CUDA_CHECK_LAUNCH();
}

void sgd_step_cuda(int64_t n, float* p, const float* g, float* momentum_buffer,
                   const SgdCoeffs<float>& c, const unsigned long long* gate, Stream stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream.handle);
  sgd_step_kernel<<<grid_for(n), kBlock, 0, s>>>(n, p, g, momentum_buffer, c, gate);
  CUDA_CHECK_LAUNCH();
}

void adam_step_cuda(int64_t n, float* p, const float* g, float* m, float* v,
                    const AdamCoeffs<float>& c, const unsigned long long* gate, Stream stream) {
  if (n == 0) return;
  auto s = static_cast<cudaStream_t>(stream.handle);
  adam_step_kernel<<<grid_for(n), kBlock, 0, s>>>(n, p, g, m, v, c, gate);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::optim
