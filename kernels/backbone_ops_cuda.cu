// CUDA kernels of the backbone's non-convolution ops (explicit padding for cuDNN, bias +
// activation, add, activations, pooling, softmax) over the math in kernels/backbone_ops.h;
// each has a CPU reference in kernels/backbone_ops_cpu.cpp.

#include <algorithm>

#include "core/cuda_error.h"
#include "kernels/backbone_cuda_common.cuh"
#include "kernels/backbone_ops.h"

namespace mirad::bbops {
namespace {

using namespace cuda_common;

__global__ void pad_kernel(int64_t planes, int64_t h, int64_t w, Pads p, float value,
                           const float* __restrict__ x, float* __restrict__ y) {
  const int64_t ph = h + p.top + p.bottom, pw = w + p.left + p.right;
  GRID_STRIDE(i, planes * ph * pw) {
    // One thread per padded cell: consecutive threads write consecutive columns, so stores
    // coalesce; interior reads are contiguous too.
    const int64_t xx = i % pw, yy = (i / pw) % ph, plane = i / (pw * ph);
    const int64_t iy = yy - p.top, ix = xx - p.left;
    y[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[(plane * h + iy) * w + ix] : value;
  }
}

__global__ void bias_act_kernel(int64_t count, int64_t c, int64_t hw,
                                const float* __restrict__ bias, int act, float* y) {
  GRID_STRIDE(i, count) {
    const float b = bias ? bias[(i / hw) % c] : 0.f;
    y[i] = activate(y[i] + b, act);
  }
}

__global__ void add_act_kernel(int64_t count, const float* a, const float* b, int act, float* y) {
  GRID_STRIDE(i, count) y[i] = activate(a[i] + b[i], act);
}

__global__ void act_kernel(int64_t count, const float* x, int act, float* y) {
  GRID_STRIDE(i, count) y[i] = activate(x[i], act);
}

template <bool kMax>
__global__ void pool_kernel(PoolGeom g, const float* __restrict__ x, float* __restrict__ y) {
  GRID_STRIDE(i, g.n * g.c * g.oh * g.ow) {
    const int64_t ox = i % g.ow, oy = (i / g.ow) % g.oh, plane = i / (g.ow * g.oh);
    const float* xp = x + plane * g.h * g.w;
    y[i] = kMax ? max_pool_at(g, xp, oy, ox) : avg_pool_at(g, xp, oy, ox);
  }
}

// One warp per (n, c) row: the lanes stride over the plane, then a shuffle reduction.
__global__ void global_avg_pool_kernel(int64_t rows, int64_t hw, const float* __restrict__ x,
                                       float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; r < rows; r += warps) {
    float s = 0.f;
    for (int64_t k = lane; k < hw; k += 32) s += x[r * hw + k];
    s = warp_sum(s);
    if (lane == 0) y[r] = s / static_cast<float>(hw);
  }
}

// One warp per (outer, inner) column of c values: max, sum of exp, then normalise.
__global__ void softmax_kernel(int64_t outer, int64_t c, int64_t inner, const float* __restrict__ x,
                               float* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t col = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; col < outer * inner;
       col += warps) {
    const int64_t o = col / inner, in = col % inner;
    const float* xp = x + o * c * inner + in;
    float* yp = y + o * c * inner + in;
    float m = -INFINITY;
    for (int64_t k = lane; k < c; k += 32) m = fmaxf(m, xp[k * inner]);
    m = warp_max(m);
    float s = 0.f;
    for (int64_t k = lane; k < c; k += 32) s += expf(xp[k * inner] - m);
    s = warp_sum(s);
    for (int64_t k = lane; k < c; k += 32) yp[k * inner] = expf(xp[k * inner] - m) / s;
  }
}

}  // namespace

void pad_cuda(int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value, const float* x,
              float* y, Stream stream) {
  const int64_t count = n * c * (h + p.top + p.bottom) * (w + p.left + p.right);
  if (count == 0) return;
  pad_kernel<<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(n * c, h, w, p, value, x, y);
  CUDA_CHECK_LAUNCH();
}

void bias_act_cuda(int64_t n, int64_t c, int64_t hw, const float* bias, int act, float* y,
                   Stream stream) {
  const int64_t count = n * c * hw;
  if (count == 0 || (!bias && act == kActNone)) return;
  bias_act_kernel<<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(count, c, hw, bias, act, y);
  CUDA_CHECK_LAUNCH();
}

void add_act_cuda(int64_t count, const float* a, const float* b, int act, float* y, Stream stream) {
  if (count == 0) return;
  add_act_kernel<<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(count, a, b, act, y);
  CUDA_CHECK_LAUNCH();
}

void act_cuda(int64_t count, const float* x, int act, float* y, Stream stream) {
  if (count == 0) return;
  act_kernel<<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(count, x, act, y);
  CUDA_CHECK_LAUNCH();
}

void max_pool_cuda(const PoolGeom& g, const float* x, float* y, Stream stream) {
  const int64_t count = g.n * g.c * g.oh * g.ow;
  if (count == 0) return;
  pool_kernel<true><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(g, x, y);
  CUDA_CHECK_LAUNCH();
}

void avg_pool_cuda(const PoolGeom& g, const float* x, float* y, Stream stream) {
  const int64_t count = g.n * g.c * g.oh * g.ow;
  if (count == 0) return;
  pool_kernel<false><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(g, x, y);
  CUDA_CHECK_LAUNCH();
}

void global_avg_pool_cuda(int64_t rows, int64_t hw, const float* x, float* y, Stream stream) {
  if (rows == 0) return;
  global_avg_pool_kernel<<<warp_grid(rows), kBlock, 0, to_cuda(stream)>>>(rows, hw, x, y);
  CUDA_CHECK_LAUNCH();
}

void softmax_cuda(int64_t outer, int64_t c, int64_t inner, const float* x, float* y,
                  Stream stream) {
  if (outer * inner == 0) return;
  softmax_kernel<<<warp_grid(outer * inner), kBlock, 0, to_cuda(stream)>>>(outer, c, inner, x, y);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::bbops
