// CUDA kernels of the reduced-precision backbone (kernels/backbone_ops_half.h): NHWC activations
// in FP16 or BF16, math in float32, one round-to-nearest-even on store. Each has a CPU reference
// in kernels/backbone_ops_half_cpu.cpp.

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "core/cuda_error.h"
#include "kernels/backbone_cuda_common.cuh"
#include "kernels/backbone_ops_half.h"

namespace mirad::bbops {
namespace {

using namespace cuda_common;

constexpr int kTile = 32;      // transpose tile (kTile x kTile), ...
constexpr int kTileRows = 8;   // ... loaded by kTile x kTileRows threads

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__half v) { return __half2float(v); }
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class S>
__device__ __forceinline__ S st(float v);
template <>
__device__ __forceinline__ float st<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half st<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Runs f with a value of the storage type that `t` names, so that one generic lambda launches
// the FP16 or the BF16 instance of a kernel.
template <class F>
void dispatch(Half t, F&& f) {
  if (t == Half::fp16)
    f(__half{});
  else
    f(__nv_bfloat16{});
}
template <class S>
const S* as(const uint16_t* p) { return reinterpret_cast<const S*>(p); }
template <class S>
S* as(uint16_t* p) { return reinterpret_cast<S*>(p); }

// y[b] = x[b]^T for `batch` rows x cols matrices, converting In -> float -> Out. Through a
// shared-memory tile so that both the reads and the writes coalesce; the +1 column keeps the
// transposed reads free of bank conflicts. One block per tile, looping when tiles outnumber the
// grid.
template <class In, class Out>
__global__ void transpose_kernel(int64_t batch, int64_t rows, int64_t cols,
                                 const In* __restrict__ x, Out* __restrict__ y) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t tr = (rows + kTile - 1) / kTile, tc = (cols + kTile - 1) / kTile;
  for (int64_t t = blockIdx.x; t < batch * tr * tc; t += gridDim.x) {
    const int64_t b = t / (tr * tc), r0 = (t / tc) % tr * kTile, c0 = t % tc * kTile;
    const In* xb = x + b * rows * cols;
    Out* yb = y + b * rows * cols;
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t r = r0 + j, c = c0 + threadIdx.x;
      if (r < rows && c < cols) tile[j][threadIdx.x] = ld(xb[r * cols + c]);
    }
    __syncthreads();
    for (int j = threadIdx.y; j < kTile; j += kTileRows) {
      const int64_t c = c0 + j, r = r0 + threadIdx.x;
      if (r < rows && c < cols) yb[c * rows + r] = st<Out>(tile[threadIdx.x][j]);
    }
    __syncthreads();
  }
}

template <class In, class Out>
void transpose(int64_t batch, int64_t rows, int64_t cols, const In* x, Out* y, Stream stream) {
  const int64_t tiles = batch * ((rows + kTile - 1) / kTile) * ((cols + kTile - 1) / kTile);
  if (tiles == 0) return;
  transpose_kernel<In, Out><<<grid_for(tiles, 1), dim3(kTile, kTileRows), 0, to_cuda(stream)>>>(
      batch, rows, cols, x, y);
  CUDA_CHECK_LAUNCH();
}

template <class S>
__global__ void pad_nhwc_kernel(int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value,
                                const S* __restrict__ x, S* __restrict__ y) {
  const int64_t ph = h + p.top + p.bottom, pw = w + p.left + p.right;
  const S fill = st<S>(value);
  GRID_STRIDE(i, n * ph * pw * c) {
    const int64_t k = i % c, pix = i / c;
    const int64_t xx = pix % pw, yy = (pix / pw) % ph, b = pix / (pw * ph);
    const int64_t iy = yy - p.top, ix = xx - p.left;
    y[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? x[((b * h + iy) * w + ix) * c + k] : fill;
  }
}

template <class S>
__global__ void bias_act_nhwc_kernel(int64_t count, int64_t c, const float* __restrict__ bias,
                                     int act, S* y) {
  GRID_STRIDE(i, count) {
    const float b = bias ? bias[i % c] : 0.f;
    y[i] = st<S>(activate(overflow_to_nan(ld(y[i]) + b), act));
  }
}

template <class S>
__global__ void add_act_kernel(int64_t count, const S* a, const S* b, int act, S* y) {
  GRID_STRIDE(i, count) y[i] = st<S>(activate(overflow_to_nan(ld(a[i]) + ld(b[i])), act));
}

template <class S>
__global__ void act_kernel(int64_t count, const S* x, int act, S* y) {
  GRID_STRIDE(i, count) y[i] = st<S>(activate(overflow_to_nan(ld(x[i])), act));
}

// One thread per output cell and channel; channels innermost, so neighbouring threads read
// neighbouring channels of the same window cell.
template <bool kMax, class S>
__global__ void pool_nhwc_kernel(PoolGeom g, const S* __restrict__ x, S* __restrict__ y) {
  GRID_STRIDE(i, g.n * g.oh * g.ow * g.c) {
    const int64_t k = i % g.c, ox = (i / g.c) % g.ow, oy = (i / (g.c * g.ow)) % g.oh,
                  b = i / (g.c * g.ow * g.oh);
    auto load = [&](int64_t iy, int64_t ix) { return ld(x[((b * g.h + iy) * g.w + ix) * g.c + k]); };
    y[i] = st<S>(kMax ? max_pool_window(g, oy, ox, load) : avg_pool_window(g, oy, ox, load));
  }
}

// One thread per (image, channel), summing its positions in order as the CPU reference does.
template <class S>
__global__ void global_avg_pool_nhwc_kernel(int64_t n, int64_t hw, int64_t c,
                                            const S* __restrict__ x, S* __restrict__ y) {
  GRID_STRIDE(i, n * c) {
    const int64_t b = i / c, k = i % c;
    float s = 0.f;
    for (int64_t p = 0; p < hw; ++p) s += ld(x[(b * hw + p) * c + k]);
    y[i] = st<S>(s / static_cast<float>(hw));
  }
}

// One warp per (outer, inner) column of c values, as the float32 softmax kernel.
template <class S>
__global__ void softmax_kernel(int64_t outer, int64_t c, int64_t inner, const S* __restrict__ x,
                               S* __restrict__ y) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t col = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; col < outer * inner;
       col += warps) {
    const int64_t o = col / inner, in = col % inner;
    const S* xp = x + o * c * inner + in;
    S* yp = y + o * c * inner + in;
    float m = -INFINITY;
    for (int64_t k = lane; k < c; k += 32) m = fmaxf(m, ld(xp[k * inner]));
    m = warp_max(m);
    float s = 0.f;
    for (int64_t k = lane; k < c; k += 32) s += expf(ld(xp[k * inner]) - m);
    s = warp_sum(s);
    for (int64_t k = lane; k < c; k += 32) yp[k * inner] = st<S>(expf(ld(xp[k * inner]) - m) / s);
  }
}

}  // namespace

void to_nhwc_half_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w, const float* x,
                       uint16_t* y, Stream stream) {
  // Each image is a c x hw matrix in NCHW and its transpose in NHWC.
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    transpose(n, c, h * w, x, as<S>(y), stream);
  });
}

void nhwc_half_to_float_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                             const uint16_t* x, float* y, Stream stream) {
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    transpose(n, h * w, c, as<S>(x), y, stream);
  });
}

void nhwc_to_nchw_half_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                            const uint16_t* x, uint16_t* y, Stream stream) {
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    transpose(n, h * w, c, as<S>(x), as<S>(y), stream);
  });
}

void pad_nhwc_half_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value,
                        const uint16_t* x, uint16_t* y, Stream stream) {
  const int64_t count = n * c * (h + p.top + p.bottom) * (w + p.left + p.right);
  if (count == 0) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    pad_nhwc_kernel<S><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(n, c, h, w, p, value,
                                                                         as<S>(x), as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void bias_act_nhwc_half_cuda(Half t, int64_t count, int64_t c, const float* bias, int act,
                             uint16_t* y, Stream stream) {
  if (count == 0 || (!bias && act == kActNone)) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    bias_act_nhwc_kernel<S><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(count, c, bias, act,
                                                                              as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void add_act_half_cuda(Half t, int64_t count, const uint16_t* a, const uint16_t* b, int act,
                       uint16_t* y, Stream stream) {
  if (count == 0) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    add_act_kernel<S><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(count, as<S>(a), as<S>(b),
                                                                        act, as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void act_half_cuda(Half t, int64_t count, const uint16_t* x, int act, uint16_t* y,
                   Stream stream) {
  if (count == 0) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    act_kernel<S><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(count, as<S>(x), act, as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void max_pool_nhwc_half_cuda(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y,
                             Stream stream) {
  const int64_t count = g.n * g.c * g.oh * g.ow;
  if (count == 0) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    pool_nhwc_kernel<true, S><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(g, as<S>(x),
                                                                                as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void avg_pool_nhwc_half_cuda(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y,
                             Stream stream) {
  const int64_t count = g.n * g.c * g.oh * g.ow;
  if (count == 0) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    pool_nhwc_kernel<false, S><<<grid_for(count), kBlock, 0, to_cuda(stream)>>>(g, as<S>(x),
                                                                                 as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void global_avg_pool_nhwc_half_cuda(Half t, int64_t n, int64_t hw, int64_t c, const uint16_t* x,
                                    uint16_t* y, Stream stream) {
  if (n * c == 0) return;
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    global_avg_pool_nhwc_kernel<S><<<grid_for(n * c), kBlock, 0, to_cuda(stream)>>>(
        n, hw, c, as<S>(x), as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

void softmax_half_cuda(Half t, int64_t outer, int64_t c, int64_t inner, const uint16_t* x,
                       uint16_t* y, Stream stream) {
  if (outer * inner == 0) return;
  const int grid = warp_grid(outer * inner);
  dispatch(t, [&](auto tag) {
    using S = decltype(tag);
    softmax_kernel<S><<<grid, kBlock, 0, to_cuda(stream)>>>(outer, c, inner, as<S>(x), as<S>(y));
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::bbops
