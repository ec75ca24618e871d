// CUDA vector ops: grid-stride element-wise kernels over kernels/vec_ops.h, a deterministic
// two-pass dot product (fixed grid, fixed tree, no floating-point atomics) and a warp-ballot
// non-finite count.

#include <algorithm>
#include <map>
#include <mutex>
#include <utility>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/vec_ops.h"

namespace mirad::vec {
namespace {

constexpr int kBlock = 256;  // a multiple of the warp size: the count kernel relies on it
static_assert(kDotThreads == 256 && kDotBlocks == 1024, "the dot reductions assume these sizes");

using cuda::first_index;
using cuda::grid_stride;
using cuda::to_cuda;

// Up to 8 resident blocks per SM saturate memory bandwidth; the grid-stride loop covers the
// rest, so a vector past 2^31 entries does not need a grid past the launch limits.
int grid_for(int64_t n) { return cuda::grid_per_sm(n, kBlock, 8); }

__global__ void axpy_kernel(int64_t n, float a, const float* x, float* y) {
  // x and y may alias (axpy(x, x)), so no __restrict__ here or below.
  for (int64_t i = first_index(); i < n; i += grid_stride()) y[i] = axpy_element(a, x[i], y[i]);
}

__global__ void axpby_kernel(int64_t n, float a, const float* x, float b, float* y) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) y[i] = axpby_element(a, x[i], b, y[i]);
}

__global__ void scale_kernel(int64_t n, float a, float* x) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] *= a;
}

__global__ void affine_kernel(int64_t n, float a, float b, const float* x, float* y) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) y[i] = affine_element(a, b, x[i]);
}

__global__ void fill_kernel(int64_t n, float value, float* x) {
  for (int64_t i = first_index(); i < n; i += grid_stride()) x[i] = value;
}

// Fixed-shape tree sum of kThreads doubles in shared memory; returns the total in thread 0.
// The pairing depends only on thread indices, so the result is bit-reproducible.
template <int kThreads>
__device__ double block_tree_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  return shared[0];
}

// Pass 1: block b owns the strided entries b*T + t + k*(B*T) for a grid of B blocks; the grid
// size is a function of n only, so the split (and hence the result) never depends on the device.
__global__ void dot_partials_kernel(int64_t n, const float* x, const float* y, double* partials) {
  __shared__ double shared[kDotThreads];
  double sum = 0;
  for (int64_t i = first_index(); i < n; i += grid_stride()) sum += dot_term(x[i], y[i]);
  const double total = block_tree_sum<kDotThreads>(sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Pass 2: one block of kDotBlocks threads adds the n_partials partials (missing ones are 0).
__global__ void dot_finish_kernel(int n_partials, const double* partials, double* out) {
  __shared__ double shared[kDotBlocks];
  const double value = int(threadIdx.x) < n_partials ? partials[threadIdx.x] : 0.0;
  const double total = block_tree_sum<kDotBlocks>(value, shared);
  if (threadIdx.x == 0) *out = total;
}

__global__ void count_nonfinite_kernel(int64_t n, const float* x, unsigned long long* count) {
  // Iterate per warp so all 32 lanes stay in the loop together and one ballot aggregates them:
  // an all-NaN vector then costs one atomic per warp, not per entry. Integer atomics are exact,
  // so the count is deterministic.
  const int lane = threadIdx.x & 31;
  for (int64_t base = first_index() - lane; base < n; base += grid_stride()) {
    const int64_t i = base + lane;
    const bool bad = i < n && !isfinite(x[i]);
    const unsigned mask = __ballot_sync(0xffffffffu, bad);
    if (mask != 0 && lane == 0) atomicAdd(count, static_cast<unsigned long long>(__popc(mask)));
  }
}

}  // namespace

void axpy_cuda(int64_t n, float a, const float* x, float* y, Stream stream) {
  if (n == 0) return;
  axpy_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, a, x, y);
  CUDA_CHECK_LAUNCH();
}

void axpby_cuda(int64_t n, float a, const float* x, float b, float* y, Stream stream) {
  if (n == 0) return;
  axpby_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, a, x, b, y);
  CUDA_CHECK_LAUNCH();
}

void scale_cuda(int64_t n, float a, float* x, Stream stream) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, a, x);
  CUDA_CHECK_LAUNCH();
}

void affine_cuda(int64_t n, float a, float b, const float* x, float* y, Stream stream) {
  if (n == 0) return;
  affine_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, a, b, x, y);
  CUDA_CHECK_LAUNCH();
}

void fill_cuda(int64_t n, float value, float* x, Stream stream) {
  if (n == 0) return;
  fill_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, value, x);
  CUDA_CHECK_LAUNCH();
}

void dot_cuda(int64_t n, const float* x, const float* y, double* out, double* scratch,
              Stream stream) {
  // Small vectors use fewer blocks (fewer idle launches); the count is a function of n alone.
  const int64_t wanted = (n + kDotThreads - 1) / kDotThreads;
  const int blocks = static_cast<int>(std::clamp<int64_t>(wanted, 1, kDotBlocks));
  if (n > 0) {
    dot_partials_kernel<<<blocks, kDotThreads, 0, to_cuda(stream)>>>(n, x, y, scratch);
    CUDA_CHECK_LAUNCH();
  }
  // n == 0 still runs the finish pass with no partials, which writes the 0 to *out.
  dot_finish_kernel<<<1, kDotBlocks, 0, to_cuda(stream)>>>(n > 0 ? blocks : 0, scratch, out);
  CUDA_CHECK_LAUNCH();
}

double* dot_scratch_cuda(Stream stream) {
  // Keyed by device as well: one stream handle value (the default stream) exists on every
  // device. Deliberately never freed (see kernels/vec_ops.h).
  static std::mutex mutex;
  static std::map<std::pair<int, void*>, double*> cache;
  int device = 0;
  CUDA_CHECK_THROW(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  double*& scratch = cache[{device, stream.handle}];
  if (scratch == nullptr) {
    void* p = nullptr;
    CUDA_CHECK_THROW(cudaMalloc(&p, (kDotBlocks + 1) * sizeof(double)));
    scratch = static_cast<double*>(p);
  }
  return scratch;
}

void count_nonfinite_cuda(int64_t n, const float* x, unsigned long long* count, Stream stream) {
  if (n == 0) return;
  count_nonfinite_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, x, count);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::vec
