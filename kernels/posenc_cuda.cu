// CUDA 2-D positional encoding: one thread per table entry over kernels/posenc.h, in double
// (see there) so it matches the CPU reference to an ulp.

#include <algorithm>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/posenc.h"

namespace mirad::posenc {
namespace {

constexpr int kBlock = 256;

__global__ void positional_encoding_2d_kernel(int64_t D, int64_t W, int64_t n, float* out) {
  // Flat index over the row-major (H*W) x D table: consecutive threads write consecutive
  // channels of one row, so stores coalesce.
  const int64_t stride = int64_t(blockDim.x) * gridDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const int64_t row = i / D;
    out[i] = static_cast<float>(value_2d(D, row / W, row % W, i % D));
  }
}

}  // namespace

void positional_encoding_2d_cuda(int64_t D, int64_t H, int64_t W, float* out, Stream stream) {
  const int64_t n = H * W * D;
  if (n == 0) return;
  // The grid-stride loop covers any size; 65535 blocks is far past saturation for a table
  // built once per feature-map size.
  const int blocks = cuda::grid_capped(n, kBlock, 65535);
  positional_encoding_2d_kernel<<<blocks, kBlock, 0, cuda::to_cuda(stream)>>>(D, W, n, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::posenc
