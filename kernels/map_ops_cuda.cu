// CUDA anomaly-map ops: bilinear resize (one thread per output), separable Gaussian blur (two
// direct passes through stream-ordered scratch) and per-row top-k mean (one block per row,
// radix select on order-preserving keys, double sums in a fixed tree).

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/map_ops.h"

namespace mirad::mapops {
namespace {

constexpr int kBlock = 256;  // element-wise kernels
// row_topk_mean: one block per row, of 1024 threads for long rows (a few rows must still fill
// an SM's worth of loads) and 256 for short ones (where per-pass overhead dominates).
constexpr int kLongRowThreads = 1024;
constexpr int kShortRowThreads = 256;
constexpr int64_t kLongRow = 8192;
constexpr int kRadixBins = 256;  // 8 bits per select pass, 4 passes over a 32-bit key

using cuda::first_index;
using cuda::grid_stride;
using cuda::to_cuda;

// Up to 16 resident blocks per SM; grid-stride loops cover the rest.
int grid_for(int64_t n) { return cuda::grid_per_sm(n, kBlock, 16); }

// ---- resize ----

__global__ void resize_bilinear_kernel(int64_t total, int64_t h, int64_t w, const float* in,
                                       int64_t oh, int64_t ow, float* out) {
  for (int64_t i = first_index(); i < total; i += grid_stride()) {
    const int64_t x = i % ow;
    const int64_t y = (i / ow) % oh;
    const float* src = in + (i / (ow * oh)) * h * w;
    const LinearTap r = linear_tap(y, h, oh);
    const LinearTap c = linear_tap(x, w, ow);
    // torch's CUDA formula: h0l * (w0l * a + w1l * b) + h1l * (w0l * c + w1l * d).
    const float* row0 = src + r.i0 * w;
    const float* row1 = src + r.i1 * w;
    out[i] = r.l0 * (c.l0 * row0[c.i0] + c.l1 * row0[c.i1]) +
             r.l1 * (c.l0 * row1[c.i0] + c.l1 * row1[c.i1]);
  }
}

// ---- Gaussian blur ----

// taps[j] = phi(j) / norm for j = 0..radius; norm comes from the host (the same function).
__global__ void gaussian_taps_kernel(int64_t radius, double sigma, double norm, float* taps) {
  for (int64_t j = first_index(); j <= radius; j += grid_stride())
    taps[j] = static_cast<float>(gaussian_phi(j, sigma) / norm);
}

// One 1-D pass along columns (kVertical) or rows, over every element of [n, h, w], in float.
// The symmetric pairs are added outermost (smallest taps) first and the centre tap last, so the
// float accumulator grows monotonically and rounds least; the CPU sums in double, where the
// order does not matter at float precision.
template <bool kVertical>
__global__ void gaussian_pass_kernel(int64_t total, int64_t h, int64_t w, int64_t radius,
                                     const float* __restrict__ taps, const float* in, float* out) {
  for (int64_t i = first_index(); i < total; i += grid_stride()) {
    const int64_t x = i % w;
    const int64_t y = (i / w) % h;
    // Line start and position along the line.
    const int64_t base = kVertical ? i - y * w : i - x;
    const int64_t pos = kVertical ? y : x;
    const int64_t len = kVertical ? h : w;
    const int64_t step = kVertical ? w : 1;
    float acc = 0.f;
    for (int64_t j = radius; j >= 1; --j)
      acc += (in[base + reflect_index(pos - j, len) * step] +
              in[base + reflect_index(pos + j, len) * step]) *
             taps[j];
    out[i] = acc + in[i] * taps[0];
  }
}

// A private stream-ordered pool per device that keeps its memory (release threshold: never).
// The default pool returns freed memory to the system at every synchronisation, so each blur
// would map its scratch anew (~100 us for a 256 x 256 map); this one serves a repeated blur
// from memory already held, at the cost of keeping the largest scratch used so far. Created on
// first use and kept for the life of the process, like the dot scratch (kernels/vec_ops.h).
cudaMemPool_t scratch_pool() {
  static std::mutex mutex;
  static std::map<int, cudaMemPool_t> pools;
  int device = 0;
  CUDA_CHECK_THROW(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mutex);
  auto found = pools.find(device);
  if (found != pools.end()) return found->second;
  cudaMemPoolProps props{};
  props.allocType = cudaMemAllocationTypePinned;
  props.location.type = cudaMemLocationTypeDevice;
  props.location.id = device;
  cudaMemPool_t pool = nullptr;
  CUDA_CHECK_THROW(cudaMemPoolCreate(&pool, &props));
  uint64_t keep_everything = UINT64_MAX;
  CUDA_CHECK_THROW(
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_everything));
  pools.emplace(device, pool);
  return pool;
}

// Stream-ordered scratch from scratch_pool(): cudaFreeAsync in the destructor (never throws),
// so an exception between allocation and the last launch does not leak.
struct AsyncScratch {
  void* ptr = nullptr;
  cudaStream_t stream = nullptr;
  AsyncScratch(std::size_t bytes, cudaStream_t s) : stream(s) {
    CUDA_CHECK_THROW(cudaMallocFromPoolAsync(&ptr, bytes, scratch_pool(), s));
  }
  ~AsyncScratch() {
    if (ptr) CUDA_CHECK_PRINT(cudaFreeAsync(ptr, stream));
  }
  AsyncScratch(const AsyncScratch&) = delete;
  AsyncScratch& operator=(const AsyncScratch&) = delete;
};

// ---- row top-k mean ----

// Monotone map float -> uint32 (a < b as floats <=> key(a) < key(b), -0 below +0), with NaN
// mapped to +Inf's key: NaN counts as +Inf.
__device__ __forceinline__ uint32_t order_key(float v) {
  if (isnan(v)) v = INFINITY;
  const uint32_t bits = __float_as_uint(v);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// Fixed-shape tree sum over the block (reproducible); every thread gets the total. The final
// barrier lets the caller reuse `shared` right away.
template <int kThreads>
__device__ double block_sum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();
  return total;
}

template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    row_topk_mean_kernel(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                         float* mean) {
  __shared__ unsigned hist[kRadixBins];
  __shared__ double sums[kThreads];
  __shared__ uint32_t s_prefix;
  __shared__ unsigned s_remaining;
  const int lane = threadIdx.x & 31;
  const int warp_base = threadIdx.x - lane;

  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* row = in + r * cols;

    // Pass 1: the plain sum, and whether +Inf (or NaN) decides both outputs.
    double sum = 0;
    int pos_inf = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float v = row[i];
      if (isnan(v) || v == INFINITY)
        pos_inf = 1;
      else
        sum += v;
    }
    const double total = block_sum<kThreads>(sum, sums);
    if (__syncthreads_or(pos_inf)) {
      if (threadIdx.x == 0) topk_mean[r] = mean[r] = INFINITY;
      continue;  // block-uniform: every thread saw the same __syncthreads_or
    }

    // Radix select of the k-th largest key, 8 bits at a time from the top: `prefix` holds the
    // digits fixed so far and `remaining` the rank of the target among keys sharing them.
    uint32_t prefix = 0, mask = 0;
    unsigned remaining = static_cast<unsigned>(k);
    for (int shift = 24; shift >= 0; shift -= 8) {
      for (int b = threadIdx.x; b < kRadixBins; b += blockDim.x) hist[b] = 0;
      __syncthreads();
      // Warp-uniform loop so __match_any_sync sees all lanes: lanes with the same digit add
      // once per warp, which keeps the (typically few) hot bins from serialising.
      for (int64_t base = warp_base; base < cols; base += blockDim.x) {
        const int64_t i = base + lane;
        int bin = kRadixBins;  // "no bin": out of range or a different prefix
        if (i < cols) {
          const uint32_t key = order_key(row[i]);
          if ((key & mask) == prefix) bin = int((key >> shift) & 0xffu);
        }
        const unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (bin != kRadixBins && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
      __syncthreads();
      // Warp 0 finds the digit: lane l owns bins 255-8l down to 248-8l; a shuffle scan over the
      // lanes' totals (highest bins first) finds the one lane where the count crosses.
      if (threadIdx.x < 32) {
        unsigned local[8], lane_total = 0;
        for (int q = 0; q < 8; ++q) {
          local[q] = hist[kRadixBins - 1 - 8 * lane - q];
          lane_total += local[q];
        }
        unsigned inclusive = lane_total;
        for (int offset = 1; offset < 32; offset *= 2) {
          const unsigned up = __shfl_up_sync(0xffffffffu, inclusive, offset);
          if (lane >= offset) inclusive += up;
        }
        unsigned before = inclusive - lane_total;
        if (before < remaining && remaining <= inclusive) {
          for (int q = 0; q < 8; ++q) {
            if (before + local[q] >= remaining) {
              s_prefix = prefix | (uint32_t(kRadixBins - 1 - 8 * lane - q) << shift);
              s_remaining = remaining - before;
              break;
            }
            before += local[q];
          }
        }
      }
      __syncthreads();
      prefix = s_prefix;
      remaining = s_remaining;
      mask |= 0xffu << shift;
      // No barrier needed before the next clear: s_* are rewritten only after the next one.
    }

    // Pass 3: the values strictly above the k-th key, plus `remaining` copies of it.
    double above = 0;
    for (int64_t i = threadIdx.x; i < cols; i += blockDim.x) {
      const float v = row[i];
      if (order_key(v) > prefix) above += v;
    }
    const double top = block_sum<kThreads>(above, sums);
    if (threadIdx.x == 0) {
      topk_mean[r] = static_cast<float>((top + double(remaining) * key_value(prefix)) / double(k));
      mean[r] = static_cast<float>(total / double(cols));
    }
  }
}

__global__ void standardize_kernel(int64_t n, const float* in, double median, double iqr,
                                   float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = standardize_value(in[i], median, iqr);
}

__global__ void accumulate_kernel(int64_t n, float w, const float* __restrict__ in,
                                  float* __restrict__ acc) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    acc[i] = weighted_add(acc[i], w, in[i]);
}

}  // namespace

void standardize_cuda(int64_t n, const float* in, double median, double iqr, float* out,
                      Stream stream) {
  if (n == 0) return;
  standardize_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, in, median, iqr, out);
  CUDA_CHECK_LAUNCH();
}

void accumulate_cuda(int64_t n, float w, const float* in, float* acc, Stream stream) {
  if (n == 0) return;
  accumulate_kernel<<<grid_for(n), kBlock, 0, to_cuda(stream)>>>(n, w, in, acc);
  CUDA_CHECK_LAUNCH();
}

void resize_bilinear_cuda(int64_t n, int64_t h, int64_t w, const float* in, int64_t oh, int64_t ow,
                          float* out, Stream stream) {
  const int64_t total = n * oh * ow;
  if (total == 0) return;
  resize_bilinear_kernel<<<grid_for(total), kBlock, 0, to_cuda(stream)>>>(total, h, w, in, oh, ow, out);
  CUDA_CHECK_LAUNCH();
}

void gaussian_blur_cuda(int64_t n, int64_t h, int64_t w, float sigma, const float* in, float* out,
                        Stream stream) {
  const int64_t total = n * h * w;
  if (total == 0) return;
  const double sd = sigma;
  const int64_t radius = gaussian_radius(sd);
  // One allocation: the vertical pass's output, then the taps (256-byte aligned).
  const std::size_t map_bytes = (static_cast<std::size_t>(total) * sizeof(float) + 255) / 256 * 256;
  AsyncScratch scratch(map_bytes + static_cast<std::size_t>(radius + 1) * sizeof(float),
                       to_cuda(stream));
  auto* tmp = static_cast<float*>(scratch.ptr);
  auto* taps = reinterpret_cast<float*>(static_cast<char*>(scratch.ptr) + map_bytes);

  gaussian_taps_kernel<<<grid_for(radius + 1), kBlock, 0, to_cuda(stream)>>>(
      radius, sd, gaussian_norm(radius, sd), taps);
  CUDA_CHECK_LAUNCH();
  // Vertical into scratch, horizontal into out: in == out is safe.
  gaussian_pass_kernel<true>
      <<<grid_for(total), kBlock, 0, to_cuda(stream)>>>(total, h, w, radius, taps, in, tmp);
  CUDA_CHECK_LAUNCH();
  gaussian_pass_kernel<false>
      <<<grid_for(total), kBlock, 0, to_cuda(stream)>>>(total, h, w, radius, taps, tmp, out);
  CUDA_CHECK_LAUNCH();
}

void row_topk_mean_cuda(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                        float* mean, Stream stream) {
  if (rows == 0) return;
  // One block per row up to a generous cap; the row loop covers the rest.
  const int blocks = static_cast<int>(std::min<int64_t>(rows, int64_t(1) << 20));
  if (cols >= kLongRow)
    row_topk_mean_kernel<kLongRowThreads>
        <<<blocks, kLongRowThreads, 0, to_cuda(stream)>>>(rows, cols, k, in, topk_mean, mean);
  else
    row_topk_mean_kernel<kShortRowThreads>
        <<<blocks, kShortRowThreads, 0, to_cuda(stream)>>>(rows, cols, k, in, topk_mean, mean);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::mapops
