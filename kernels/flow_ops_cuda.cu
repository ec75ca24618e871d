// CUDA kernels, launchers and CudaFlowOps methods for every flow primitive except the GEMM
// (kernels/flow_ops_cuda_gemm.cu): element-wise coupling/ActNorm math, row and column reductions.
//
// Each op has four layers: the per-element math (kernels/coupling_math.h), a __global__ kernel
// that only does indexing, a launcher taking the cudaStream_t, and the CudaFlowOps method that
// validates its arguments. Reductions are deterministic: fixed summation order, no atomics.

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <mutex>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/coupling_math.h"
#include "kernels/flow_ops_cuda.h"

namespace mirad {
namespace {

constexpr int kBlock = 256;  // threads per block for element-wise and warp-per-row kernels
constexpr int kWarp = 32;
constexpr int kRowsPerBlock = kBlock / kWarp;  // warp-per-row kernels: one row per warp
// Column reductions: a block covers 32 columns (one per lane, so row reads coalesce) with
// 8 warps striding down the rows of its chunk.
constexpr int kTileCols = 32;
constexpr int kTileRows = 8;
// A row chunk shorter than this is not worth a partial-sum round trip through global memory.
constexpr int64_t kMinRowsPerChunk = 64;
constexpr int64_t kMaxChunks = 1024;
// Loads batched per thread before any store: a store may alias a later load, so without the
// batch each thread has one load in flight, too few to cover HBM latency.
constexpr int kBatch = 4;

using cuda::to_cuda;
using cuda::warp_sum;

// ---------------------------------------------------------------------------------------------
// Per-device facts, looked up once: a private stream-ordered pool provides the partial-sum
// scratch of two-stage reductions without a cudaMalloc per call. (The SM count that sizes grids
// is core/cuda_launch.cuh's cached one.)

struct DeviceInfo {
  bool ready = false;
  cudaMemPool_t pool = nullptr;  // null where the device has no memory-pool support
};

// Returned by value so callers never hold a reference into the shared table.
DeviceInfo device_info() {
  constexpr int kMaxDevices = 64;
  static std::mutex mu;
  static DeviceInfo infos[kMaxDevices];
  int dev = 0;
  CUDA_CHECK_THROW(cudaGetDevice(&dev));
  CHECK_THROW(dev >= 0 && dev < kMaxDevices);
  std::lock_guard<std::mutex> lock(mu);
  DeviceInfo& info = infos[dev];
  if (info.ready) return info;
  int pools_supported = 0;
  CUDA_CHECK_THROW(cudaDeviceGetAttribute(&pools_supported, cudaDevAttrMemoryPoolsSupported, dev));
  if (pools_supported) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = dev;
    CUDA_CHECK_THROW(cudaMemPoolCreate(&info.pool, &props));
    // Keep freed scratch mapped across synchronisations: training calls these ops every step.
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK_THROW(cudaMemPoolSetAttribute(info.pool, cudaMemPoolAttrReleaseThreshold, &keep));
  }
  // The pool is deliberately never destroyed: at static destruction the CUDA context may
  // already be gone, and the process exit returns the memory anyway.
  info.ready = true;
  return info;
}

// Grid for a grid-stride loop over n_items with items_per_block per block: enough blocks to
// fill every SM (8 x 256 threads each) and no more, so huge sizes loop instead of over-launching.
unsigned grid_for(int64_t n_items, int64_t items_per_block) {
  return static_cast<unsigned>(cuda::grid_per_sm(n_items, items_per_block, 8));
}

// Stream-ordered scratch from the private pool: allocated and freed on `stream`, so the memory
// is reusable by the next op on that stream without any host synchronisation.
class Scratch {
 public:
  Scratch(size_t bytes, cudaMemPool_t pool, cudaStream_t stream) : m_stream(stream) {
    CUDA_CHECK_THROW(cudaMallocFromPoolAsync(&m_ptr, bytes, pool, stream));
  }
  ~Scratch() {
    if (m_ptr) CUDA_CHECK_PRINT(cudaFreeAsync(m_ptr, m_stream));
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  float* data() const { return static_cast<float*>(m_ptr); }

 private:
  void* m_ptr = nullptr;
  cudaStream_t m_stream;
};

// ---------------------------------------------------------------------------------------------
// Device helpers.

__device__ __forceinline__ int64_t global_thread() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_threads() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

// ---------------------------------------------------------------------------------------------
// Element-wise kernels: grid-stride over the flat (row, col) index in 64 bits; strided rows are
// addressed through their leading dimension so column slices of wider matrices work in place.

__global__ void gather_cols_kernel(int64_t N, int64_t n_out, const int32_t* idx, const float* src,
                                   int64_t lds, float* dst, int64_t ldd) {
  const int64_t total = N * n_out;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t n = i / n_out, c = i - n * n_out;
    dst[n * ldd + c] = src[n * lds + idx[c]];
  }
}

__global__ void broadcast_rows_kernel(int64_t N, int64_t W, const float* b, float* dst,
                                      int64_t ldd) {
  const int64_t total = N * W;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t n = i / W, j = i - n * W;
    dst[n * ldd + j] = b[j];
  }
}

// Rows [t*n, (t+1)*n) get task t's bias b + t*sb.
__global__ void broadcast_rows_batched_kernel(int64_t batch, int64_t n, int64_t W, const float* b,
                                              int64_t sb, float* dst, int64_t ldd) {
  const int64_t total = batch * n * W;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t row = i / W, j = i - row * W;
    dst[row * ldd + j] = b[(row / n) * sb + j];
  }
}

// Column sums per task in one launch: block (kTileCols, kTileRows) owns kTileCols columns of
// task blockIdx.y; its rows stride by kTileRows, and the kTileRows partials are added in a
// fixed order, so the result does not depend on scheduling.
__global__ void __launch_bounds__(kTileCols* kTileRows)
    col_sum_batched_kernel(int64_t n, int64_t W, const float* src, int64_t lds, float beta,
                           float* dst, int64_t sd) {
  __shared__ float part[kTileRows][kTileCols + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t t = blockIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTileCols + tx;
  const float* rows = src + t * n * lds;
  float acc = 0.f;
  if (j < W)
    for (int64_t r = ty; r < n; r += kTileRows) acc += rows[r * lds + j];
  part[ty][tx] = acc;
  __syncthreads();
  if (ty != 0 || j >= W) return;
  float sum = 0.f;
  for (int k = 0; k < kTileRows; ++k) sum += part[k][tx];
  float* out = dst + t * sd + j;
  *out = beta == 0.f ? sum : beta * *out + sum;  // beta = 0 overwrites, even a NaN
}

__global__ void relu_kernel(int64_t n, const float* a, float* r) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) r[i] = a[i] > 0.f ? a[i] : 0.f;
}

// `out` may alias `in` (the flow masks gradients in place), so no __restrict__ here.
__global__ void relu_mask_kernel(int64_t n, const float* a, const float* in, float* out) {
  for (int64_t i = global_thread(); i < n; i += grid_threads()) out[i] = a[i] > 0.f ? in[i] : 0.f;
}

__global__ void coupling_inverse_kernel(int64_t N, int64_t d2, float clamp, const float* o,
                                        const float* y2, int64_t ldy, float* x2, int64_t ldx) {
  const int64_t total = N * d2;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t n = i / d2, j = i - n * d2;
    // o row n is [u | t], each d2 wide.
    const float s = math::soft_clamp(o[n * 2 * d2 + j], clamp);
    x2[n * ldx + j] = math::coupling_x(y2[n * ldy + j], s, o[n * 2 * d2 + d2 + j]);
  }
}

__global__ void coupling_backward_kernel(int64_t N, int64_t d2, float clamp, float inv_n,
                                         const float* x2, int64_t ldx, const float* s, float* g2,
                                         int64_t ldg, float* g_o) {
  const int64_t total = N * d2;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t n = i / d2, j = i - n * d2;
    // g2 is read then overwritten by the same thread: dL/dy2 in, dL/dx2 out.
    const auto g = math::coupling_grad(g2[n * ldg + j], x2[n * ldx + j], s[i], clamp, inv_n);
    g_o[n * 2 * d2 + j] = g.g_u;
    g_o[n * 2 * d2 + d2 + j] = g.g_t;
    g2[n * ldg + j] = g.g_x2;
  }
}

__global__ void coupling_tangent_kernel(int64_t N, int64_t d2, float clamp, const float* x2,
                                        int64_t ldx, const float* s, const float* x2_dot,
                                        int64_t ldxd, const float* o_dot, float* y2_dot,
                                        int64_t ldyd, float* s_dot) {
  const int64_t total = N * d2;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t n = i / d2, j = i - n * d2;
    const auto r = math::coupling_tangent(x2[n * ldx + j], s[i], clamp, o_dot[n * 2 * d2 + j],
                                          o_dot[n * 2 * d2 + d2 + j], x2_dot[n * ldxd + j]);
    s_dot[i] = r.s_dot;
    y2_dot[n * ldyd + j] = r.y2_dot;
  }
}

__global__ void coupling_backward_hvp_kernel(int64_t N, int64_t d2, float clamp, float inv_n,
                                             const float* x2, int64_t ldx, const float* s,
                                             const float* x2_dot, int64_t ldxd, const float* s_dot,
                                             float* g2, float* g2_dot, int64_t ldg, float* g_o,
                                             float* g_o_dot) {
  const int64_t total = N * d2;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t n = i / d2, j = i - n * d2;
    const int64_t gi = n * ldg + j;
    const auto r = math::coupling_grad_hvp(g2[gi], g2_dot[gi], x2[n * ldx + j],
                                           x2_dot[n * ldxd + j], s[i], s_dot[i], clamp, inv_n);
    g_o[n * 2 * d2 + j] = r.g.g_u;
    g_o[n * 2 * d2 + d2 + j] = r.g.g_t;
    g_o_dot[n * 2 * d2 + j] = r.g_dot.g_u;
    g_o_dot[n * 2 * d2 + d2 + j] = r.g_dot.g_t;
    g2[gi] = r.g.g_x2;
    g2_dot[gi] = r.g_dot.g_x2;
  }
}

__global__ void actnorm_forward_kernel(int64_t N, int64_t D, const float* ls, const float* b,
                                       const float* y, float* z) {
  const int64_t total = N * D;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t j = i % D;
    z[i] = math::actnorm_z(y[i], ls[j], b[j]);
  }
}

__global__ void actnorm_inverse_kernel(int64_t N, int64_t D, const float* ls, const float* b,
                                       const float* z, float* y) {
  const int64_t total = N * D;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t j = i % D;
    y[i] = math::actnorm_y(z[i], ls[j], b[j]);
  }
}

__global__ void actnorm_tangent_kernel(int64_t N, int64_t D, const float* ls, const float* ls_dot,
                                       const float* b_dot, const float* y, const float* y_dot,
                                       float* z_dot) {
  const int64_t total = N * D;
  for (int64_t i = global_thread(); i < total; i += grid_threads()) {
    const int64_t j = i % D;
    z_dot[i] = math::actnorm_z_dot(y[i], y_dot[i], math::exp_(ls[j]), ls_dot[j], b_dot[j]);
  }
}

// ---------------------------------------------------------------------------------------------
// Row reductions: one warp per row, lanes stride the row (coalesced), then a butterfly sum.
// The row loop is warp-uniform, so the full-mask shuffles are always legal.

__global__ void coupling_forward_kernel(int64_t N, int64_t d2, float clamp, const float* o,
                                        const float* x2, int64_t ldx, float* y2, int64_t ldy,
                                        float* s, float* log_det) {
  const int lane = threadIdx.x % kWarp;
  const int64_t n_warps = grid_threads() / kWarp;
  for (int64_t n = global_thread() / kWarp; n < N; n += n_warps) {
    const float* u = o + n * 2 * d2;
    const float* t = u + d2;
    float acc = 0.f;
    int64_t j = lane;
    for (; j + (kBatch - 1) * kWarp < d2; j += kBatch * kWarp) {
      float uj[kBatch], tj[kBatch], xj[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        uj[b] = u[j + b * kWarp];
        tj[b] = t[j + b * kWarp];
        xj[b] = x2[n * ldx + j + b * kWarp];
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b) {
        const float sj = math::soft_clamp(uj[b], clamp);
        s[n * d2 + j + b * kWarp] = sj;
        y2[n * ldy + j + b * kWarp] = math::coupling_y(xj[b], sj, tj[b]);
        acc += sj;
      }
    }
    for (; j < d2; j += kWarp) {
      const float sj = math::soft_clamp(u[j], clamp);
      s[n * d2 + j] = sj;
      y2[n * ldy + j] = math::coupling_y(x2[n * ldx + j], sj, t[j]);
      acc += sj;
    }
    // log|det J| of this block adds to whatever earlier blocks accumulated for the row.
    acc = warp_sum(acc);
    if (lane == 0) log_det[n] += acc;
  }
}

__global__ void nll_rows_kernel(int64_t N, int64_t D, const float* z, const float* log_det,
                                const float* ls, float* nll) {
  const int lane = threadIdx.x % kWarp;
  const int64_t n_warps = grid_threads() / kWarp;
  for (int64_t n = global_thread() / kWarp; n < N; n += n_warps) {
    // sum(ls) is recomputed per row: D cached loads cost less than a separate launch, and the
    // fixed lane pattern gives every row the bit-identical value.
    float sq = 0.f, sum_ls = 0.f;
#pragma unroll 4
    for (int64_t j = lane; j < D; j += kWarp) {
      const float zj = z[n * D + j];
      sq += zj * zj;
      sum_ls += ls[j];
    }
    sq = warp_sum(sq);
    sum_ls = warp_sum(sum_ls);
    if (lane == 0)
      nll[n] = math::nll_from_parts(sq, log_det[n], sum_ls, D);
  }
}

__global__ void nonfinite_rows_kernel(int64_t N, int64_t D, const float* x, int64_t ldx,
                                      uint8_t* flags) {
  const int lane = threadIdx.x % kWarp;
  const int64_t n_warps = grid_threads() / kWarp;
  for (int64_t n = global_thread() / kWarp; n < N; n += n_warps) {
    bool bad = false;
#pragma unroll 4
    for (int64_t j = lane; j < D; j += kWarp) bad |= !isfinite(x[n * ldx + j]);
    // A vote instead of a sum: one non-finite lane flags the row.
    const bool any_bad = __any_sync(0xffffffffu, bad);
    if (lane == 0) flags[n] = any_bad ? 1 : 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Column reductions, two-stage and deterministic. Stage 1: a 2-D grid, blockIdx.x = 32-column
// tile, blockIdx.y = chunk of rows; each of 8 warps sums every 8th row of the chunk, and warp 0
// folds the 8 partials from shared memory in a fixed order. With a single chunk stage 1 writes
// the result itself; otherwise it writes partial[k][chunk][col] and stage 2 sums the chunks in
// order. An Op supplies K sums per column: column(j) loads per-column constants once, load()
// reads one element's inputs, apply() adds its terms (and writes any element-wise outputs),
// finish() stores the results.

struct ColSumOp {
  static constexpr int K = 1;
  const float* src;
  int64_t lds;
  float beta;
  float* dst;
  struct Col {};
  struct Elem {
    float v;
  };
  __device__ Col column(int64_t) const { return {}; }
  __device__ Elem load(int64_t n, int64_t j) const { return {src[n * lds + j]}; }
  __device__ void apply(int64_t, int64_t, const Col&, const Elem& e, float (&acc)[K]) const {
    acc[0] += e.v;
  }
  // beta == 0 overwrites: the old contents may be uninitialised, even NaN.
  __device__ void finish(int64_t j, const float (&sum)[K]) const {
    dst[j] = (beta == 0.f ? 0.f : beta * dst[j]) + sum[0];
  }
};

struct ActnormBackwardOp {
  static constexpr int K = 2;
  int64_t D;
  float inv_n;
  const float *ls, *b, *z;
  float *g_y, *g_ls, *g_b;
  struct Col {
    float e, b;
  };
  struct Elem {
    float z;
  };
  __device__ Col column(int64_t j) const { return {math::exp_(ls[j]), b[j]}; }
  __device__ Elem load(int64_t n, int64_t j) const { return {z[n * D + j]}; }
  __device__ void apply(int64_t n, int64_t j, const Col& c, const Elem& e, float (&acc)[K]) const {
    const auto g = math::actnorm_grad(e.z, c.e, c.b, inv_n);
    g_y[n * D + j] = g.g_y;
    acc[0] += g.g_ls_term;
    acc[1] += g.g_b_term;
  }
  // g_ls starts at -1: the -sum(ls) term of the NLL has derivative -1 per channel.
  __device__ void finish(int64_t j, const float (&sum)[K]) const {
    g_ls[j] = -1.f + sum[0];
    g_b[j] = sum[1];
  }
};

struct ActnormBackwardHvpOp {
  static constexpr int K = 4;
  int64_t D;
  float inv_n;
  const float *ls, *b, *ls_dot, *b_dot, *z, *z_dot;
  float *g_y, *g_y_dot, *g_ls, *g_b, *hv_ls, *hv_b;
  struct Col {
    float e, b, ls_dot, b_dot;
  };
  __device__ Col column(int64_t j) const { return {math::exp_(ls[j]), b[j], ls_dot[j], b_dot[j]}; }
  struct Elem {
    float z, z_dot;
  };
  __device__ Elem load(int64_t n, int64_t j) const { return {z[n * D + j], z_dot[n * D + j]}; }
  __device__ void apply(int64_t n, int64_t j, const Col& c, const Elem& e, float (&acc)[K]) const {
    const int64_t i = n * D + j;
    const auto g = math::actnorm_grad_hvp(e.z, e.z_dot, c.e, c.b, c.ls_dot, c.b_dot, inv_n);
    g_y[i] = g.g_y;
    g_y_dot[i] = g.g_y_dot;
    acc[0] += g.g_ls_term;
    acc[1] += g.g_b_term;
    acc[2] += g.hv_ls_term;
    acc[3] += g.hv_b_term;
  }
  __device__ void finish(int64_t j, const float (&sum)[K]) const {
    g_ls[j] = -1.f + sum[0];
    g_b[j] = sum[1];
    hv_ls[j] = sum[2];
    hv_b[j] = sum[3];
  }
};

template <class Op>
__global__ void __launch_bounds__(kTileCols* kTileRows)
    col_reduce_stage1_kernel(Op op, int64_t N, int64_t W, int64_t rows_per_chunk, float* partial) {
  __shared__ float tile[Op::K][kTileRows][kTileCols];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kTileCols + tx;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(N, r0 + rows_per_chunk);
  float acc[Op::K] = {};
  if (j < W) {
    const auto c = op.column(j);
    int64_t n = r0 + ty;
    // kBatch rows loaded before any is applied; they are still summed in row order.
    for (; n + (kBatch - 1) * kTileRows < r1; n += kBatch * kTileRows) {
      typename Op::Elem e[kBatch];
#pragma unroll
      for (int b = 0; b < kBatch; ++b) e[b] = op.load(n + b * kTileRows, j);
#pragma unroll
      for (int b = 0; b < kBatch; ++b) op.apply(n + b * kTileRows, j, c, e[b], acc);
    }
    for (; n < r1; n += kTileRows) op.apply(n, j, c, op.load(n, j), acc);
  }
#pragma unroll
  for (int k = 0; k < Op::K; ++k) tile[k][ty][tx] = acc[k];
  __syncthreads();
  if (ty != 0 || j >= W) return;
  // Warp 0 folds the 8 row-lanes for its column in a fixed order (deterministic).
  float total[Op::K];
#pragma unroll
  for (int k = 0; k < Op::K; ++k) {
    float t = tile[k][0][tx];
#pragma unroll
    for (int y = 1; y < kTileRows; ++y) t += tile[k][y][tx];
    total[k] = t;
  }
  if (gridDim.y == 1) {
    op.finish(j, total);
    return;
  }
#pragma unroll
  for (int k = 0; k < Op::K; ++k)
    partial[(static_cast<int64_t>(k) * gridDim.y + blockIdx.y) * W + j] = total[k];
}

template <class Op>
__global__ void col_reduce_stage2_kernel(Op op, int64_t W, int n_chunks, const float* partial) {
  for (int64_t j = global_thread(); j < W; j += grid_threads()) {
    float total[Op::K];
#pragma unroll
    for (int k = 0; k < Op::K; ++k) {
      // Chunks in index order: the same sum on every run.
      float t = 0.f;
      for (int c = 0; c < n_chunks; ++c)
        t += partial[(static_cast<int64_t>(k) * n_chunks + c) * W + j];
      total[k] = t;
    }
    op.finish(j, total);
  }
}

// Picks the row chunking: about 4 blocks per SM in all, each chunk at least kMinRowsPerChunk
// rows. Small N, or wide W that fills the GPU with column tiles alone, runs in one stage.
template <class Op>
void launch_col_reduce(const Op& op, int64_t N, int64_t W, cudaStream_t stream) {
  if (W == 0) return;
  const DeviceInfo info = device_info();
  const int64_t col_tiles = (W + kTileCols - 1) / kTileCols;
  const int64_t target_blocks = 4 * static_cast<int64_t>(cuda::sm_count());
  int64_t n_chunks = std::min((target_blocks + col_tiles - 1) / col_tiles,
                              (N + kMinRowsPerChunk - 1) / kMinRowsPerChunk);
  n_chunks = std::clamp<int64_t>(n_chunks, 1, kMaxChunks);
  if (!info.pool) n_chunks = 1;  // no stream-ordered scratch: single stage
  // Even chunks, then drop any chunk the rounding left empty.
  const int64_t rows_per_chunk = std::max<int64_t>(1, (N + n_chunks - 1) / n_chunks);
  n_chunks = std::max<int64_t>(1, (N + rows_per_chunk - 1) / rows_per_chunk);
  CHECK_THROW(col_tiles <= INT32_MAX);

  const dim3 block(kTileCols, kTileRows);
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(n_chunks));
  if (n_chunks == 1) {
    col_reduce_stage1_kernel<Op><<<grid, block, 0, stream>>>(op, N, W, rows_per_chunk, nullptr);
    CUDA_CHECK_LAUNCH();
    return;
  }
  Scratch partial(sizeof(float) * Op::K * n_chunks * W, info.pool, stream);
  col_reduce_stage1_kernel<Op>
      <<<grid, block, 0, stream>>>(op, N, W, rows_per_chunk, partial.data());
  CUDA_CHECK_LAUNCH();
  col_reduce_stage2_kernel<Op><<<grid_for(W, kBlock), kBlock, 0, stream>>>(
      op, W, static_cast<int>(n_chunks), partial.data());
  CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------------------------
// Launchers: skip empty work (a zero-sized grid is a launch error), size the grid, check.

void gather_cols_launch(int64_t N, int64_t n_out, const int32_t* idx, const float* src, int64_t lds,
                        float* dst, int64_t ldd, cudaStream_t st) {
  if (N * n_out == 0) return;
  gather_cols_kernel<<<grid_for(N * n_out, kBlock), kBlock, 0, st>>>(N, n_out, idx, src, lds, dst,
                                                                     ldd);
  CUDA_CHECK_LAUNCH();
}

void broadcast_rows_launch(int64_t N, int64_t W, const float* b, float* dst, int64_t ldd,
                           cudaStream_t st) {
  if (N * W == 0) return;
  broadcast_rows_kernel<<<grid_for(N * W, kBlock), kBlock, 0, st>>>(N, W, b, dst, ldd);
  CUDA_CHECK_LAUNCH();
}

void broadcast_rows_batched_launch(int64_t batch, int64_t n, int64_t W, const float* b, int64_t sb,
                                   float* dst, int64_t ldd, cudaStream_t st) {
  if (batch * n * W == 0) return;
  broadcast_rows_batched_kernel<<<grid_for(batch * n * W, kBlock), kBlock, 0, st>>>(
      batch, n, W, b, sb, dst, ldd);
  CUDA_CHECK_LAUNCH();
}

void col_sum_batched_launch(int64_t batch, int64_t n, int64_t W, const float* src, int64_t lds,
                            float beta, float* dst, int64_t sd, cudaStream_t st) {
  if (batch * W == 0) return;
  const int64_t col_tiles = (W + kTileCols - 1) / kTileCols;
  CHECK_THROW(col_tiles <= INT32_MAX && batch <= 65535);
  const dim3 grid(static_cast<unsigned>(col_tiles), static_cast<unsigned>(batch));
  col_sum_batched_kernel<<<grid, dim3(kTileCols, kTileRows), 0, st>>>(n, W, src, lds, beta, dst,
                                                                      sd);
  CUDA_CHECK_LAUNCH();
}

void relu_launch(int64_t n, const float* a, float* r, cudaStream_t st) {
  if (n == 0) return;
  relu_kernel<<<grid_for(n, kBlock), kBlock, 0, st>>>(n, a, r);
  CUDA_CHECK_LAUNCH();
}

void relu_mask_launch(int64_t n, const float* a, const float* in, float* out, cudaStream_t st) {
  if (n == 0) return;
  relu_mask_kernel<<<grid_for(n, kBlock), kBlock, 0, st>>>(n, a, in, out);
  CUDA_CHECK_LAUNCH();
}

void coupling_forward_launch(int64_t N, int64_t d2, float clamp, const float* o, const float* x2,
                             int64_t ldx, float* y2, int64_t ldy, float* s, float* log_det,
                             cudaStream_t st) {
  // d2 == 0 still adds an empty sum to log_det: nothing to do.
  if (N == 0 || d2 == 0) return;
  coupling_forward_kernel<<<grid_for(N, kRowsPerBlock), kBlock, 0, st>>>(N, d2, clamp, o, x2, ldx,
                                                                         y2, ldy, s, log_det);
  CUDA_CHECK_LAUNCH();
}

void coupling_inverse_launch(int64_t N, int64_t d2, float clamp, const float* o, const float* y2,
                             int64_t ldy, float* x2, int64_t ldx, cudaStream_t st) {
  if (N * d2 == 0) return;
  coupling_inverse_kernel<<<grid_for(N * d2, kBlock), kBlock, 0, st>>>(N, d2, clamp, o, y2, ldy, x2,
                                                                       ldx);
  CUDA_CHECK_LAUNCH();
}

void coupling_backward_launch(int64_t N, int64_t d2, float clamp, float inv_n, const float* x2,
                              int64_t ldx, const float* s, float* g2, int64_t ldg, float* g_o,
                              cudaStream_t st) {
  if (N * d2 == 0) return;
  coupling_backward_kernel<<<grid_for(N * d2, kBlock), kBlock, 0, st>>>(N, d2, clamp, inv_n, x2,
                                                                        ldx, s, g2, ldg, g_o);
  CUDA_CHECK_LAUNCH();
}

void coupling_tangent_launch(int64_t N, int64_t d2, float clamp, const float* x2, int64_t ldx,
                             const float* s, const float* x2_dot, int64_t ldxd, const float* o_dot,
                             float* y2_dot, int64_t ldyd, float* s_dot, cudaStream_t st) {
  if (N * d2 == 0) return;
  coupling_tangent_kernel<<<grid_for(N * d2, kBlock), kBlock, 0, st>>>(
      N, d2, clamp, x2, ldx, s, x2_dot, ldxd, o_dot, y2_dot, ldyd, s_dot);
  CUDA_CHECK_LAUNCH();
}

void coupling_backward_hvp_launch(int64_t N, int64_t d2, float clamp, float inv_n, const float* x2,
                                  int64_t ldx, const float* s, const float* x2_dot, int64_t ldxd,
                                  const float* s_dot, float* g2, float* g2_dot, int64_t ldg,
                                  float* g_o, float* g_o_dot, cudaStream_t st) {
  if (N * d2 == 0) return;
  coupling_backward_hvp_kernel<<<grid_for(N * d2, kBlock), kBlock, 0, st>>>(
      N, d2, clamp, inv_n, x2, ldx, s, x2_dot, ldxd, s_dot, g2, g2_dot, ldg, g_o, g_o_dot);
  CUDA_CHECK_LAUNCH();
}

void actnorm_forward_launch(int64_t N, int64_t D, const float* ls, const float* b, const float* y,
                            float* z, cudaStream_t st) {
  if (N * D == 0) return;
  actnorm_forward_kernel<<<grid_for(N * D, kBlock), kBlock, 0, st>>>(N, D, ls, b, y, z);
  CUDA_CHECK_LAUNCH();
}

void actnorm_inverse_launch(int64_t N, int64_t D, const float* ls, const float* b, const float* z,
                            float* y, cudaStream_t st) {
  if (N * D == 0) return;
  actnorm_inverse_kernel<<<grid_for(N * D, kBlock), kBlock, 0, st>>>(N, D, ls, b, z, y);
  CUDA_CHECK_LAUNCH();
}

void actnorm_tangent_launch(int64_t N, int64_t D, const float* ls, const float* ls_dot,
                            const float* b_dot, const float* y, const float* y_dot, float* z_dot,
                            cudaStream_t st) {
  if (N * D == 0) return;
  actnorm_tangent_kernel<<<grid_for(N * D, kBlock), kBlock, 0, st>>>(N, D, ls, ls_dot, b_dot, y,
                                                                     y_dot, z_dot);
  CUDA_CHECK_LAUNCH();
}

void nll_rows_launch(int64_t N, int64_t D, const float* z, const float* log_det, const float* ls,
                     float* nll, cudaStream_t st) {
  // D == 0 still defines nll[n] = -log_det[n], so only N == 0 is empty.
  if (N == 0) return;
  nll_rows_kernel<<<grid_for(N, kRowsPerBlock), kBlock, 0, st>>>(N, D, z, log_det, ls, nll);
  CUDA_CHECK_LAUNCH();
}

void nonfinite_rows_launch(int64_t N, int64_t D, const float* x, int64_t ldx, uint8_t* flags,
                           cudaStream_t st) {
  // D == 0 still has to clear the N flags.
  if (N == 0) return;
  nonfinite_rows_kernel<<<grid_for(N, kRowsPerBlock), kBlock, 0, st>>>(N, D, x, ldx, flags);
  CUDA_CHECK_LAUNCH();
}

// Argument checks shared by the methods. Pointers are only required where there is work.
void check_matrix(int64_t rows, int64_t cols, int64_t ld) {
  CHECK_THROW(rows >= 0);
  CHECK_THROW(cols >= 0);
  CHECK_THROW(ld >= cols);
}
void check_ptrs(bool work, std::initializer_list<const void*> ptrs) {
  if (!work) return;
  for (const void* p : ptrs) CHECK_THROW(p != nullptr);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CudaFlowOps methods (the constructor, destructor and gemm live with cuBLAS in
// flow_ops_cuda_gemm.cu). Each validates, then queues its launcher on `stream`.

void CudaFlowOps::gather_cols(int64_t N, int64_t n_out, const int32_t* idx, const float* src,
                              int64_t lds, float* dst, int64_t ldd) const {
  check_matrix(N, n_out, ldd);
  CHECK_THROW(lds >= 0);  // src's width is idx's range, unknown here
  check_ptrs(N * n_out > 0, {idx, src, dst});
  gather_cols_launch(N, n_out, idx, src, lds, dst, ldd, to_cuda(stream));
}

void CudaFlowOps::broadcast_rows(int64_t N, int64_t W, const float* b, float* dst,
                                 int64_t ldd) const {
  check_matrix(N, W, ldd);
  check_ptrs(N * W > 0, {b, dst});
  broadcast_rows_launch(N, W, b, dst, ldd, to_cuda(stream));
}

void CudaFlowOps::broadcast_rows_batched(int64_t batch, int64_t n, int64_t W, const float* b,
                                         int64_t sb, float* dst, int64_t ldd) const {
  CHECK_THROW(batch >= 0 && sb >= 0);
  check_matrix(batch * n, W, ldd);
  check_ptrs(batch * n * W > 0, {b, dst});
  broadcast_rows_batched_launch(batch, n, W, b, sb, dst, ldd, to_cuda(stream));
}

void CudaFlowOps::relu(int64_t n, const float* a, float* r) const {
  CHECK_THROW(n >= 0);
  check_ptrs(n > 0, {a, r});
  relu_launch(n, a, r, to_cuda(stream));
}

void CudaFlowOps::relu_mask(int64_t n, const float* a, const float* in, float* out) const {
  CHECK_THROW(n >= 0);
  check_ptrs(n > 0, {a, in, out});
  relu_mask_launch(n, a, in, out, to_cuda(stream));
}

void CudaFlowOps::col_sum(int64_t N, int64_t W, const float* src, int64_t lds, float beta,
                          float* dst) const {
  check_matrix(N, W, lds);
  check_ptrs(W > 0, {dst});
  check_ptrs(N * W > 0, {src});
  launch_col_reduce(ColSumOp{src, lds, beta, dst}, N, W, to_cuda(stream));
}

void CudaFlowOps::col_sum_batched(int64_t batch, int64_t n, int64_t W, const float* src,
                                  int64_t lds, float beta, float* dst, int64_t sd) const {
  CHECK_THROW(batch >= 0);
  check_matrix(batch * n, W, lds);
  CHECK_THROW(batch <= 1 || sd >= W);  // tasks' sums must not overlap
  check_ptrs(batch * W > 0, {dst});
  check_ptrs(batch * n * W > 0, {src});
  // Long tasks (all positions of many images): the single-stage kernel would leave most SMs
  // idle with a few blocks summing thousands of rows each; the chunked two-stage reduction of
  // col_sum, task by task, fills the device instead.
  constexpr int64_t kLongTask = 4096;
  if (n > kLongTask) {
    for (int64_t t = 0; t < batch; ++t)
      launch_col_reduce(ColSumOp{src + t * n * lds, lds, beta, dst + t * sd}, n, W,
                        to_cuda(stream));
    return;
  }
  col_sum_batched_launch(batch, n, W, src, lds, beta, dst, sd, to_cuda(stream));
}

void CudaFlowOps::coupling_forward(int64_t N, int64_t d2, float clamp, const float* o,
                                   const float* x2, int64_t ldx, float* y2, int64_t ldy, float* s,
                                   float* log_det) const {
  check_matrix(N, d2, ldx);
  check_matrix(N, d2, ldy);
  CHECK_THROW(clamp > 0.f);
  check_ptrs(N * d2 > 0, {o, x2, y2, s, log_det});
  coupling_forward_launch(N, d2, clamp, o, x2, ldx, y2, ldy, s, log_det, to_cuda(stream));
}

void CudaFlowOps::coupling_inverse(int64_t N, int64_t d2, float clamp, const float* o,
                                   const float* y2, int64_t ldy, float* x2, int64_t ldx) const {
  check_matrix(N, d2, ldy);
  check_matrix(N, d2, ldx);
  CHECK_THROW(clamp > 0.f);
  check_ptrs(N * d2 > 0, {o, y2, x2});
  coupling_inverse_launch(N, d2, clamp, o, y2, ldy, x2, ldx, to_cuda(stream));
}

void CudaFlowOps::coupling_backward(int64_t N, int64_t d2, float clamp, float inv_n,
                                    const float* x2, int64_t ldx, const float* s, float* g2,
                                    int64_t ldg, float* g_o) const {
  check_matrix(N, d2, ldx);
  check_matrix(N, d2, ldg);
  CHECK_THROW(clamp > 0.f);
  check_ptrs(N * d2 > 0, {x2, s, g2, g_o});
  coupling_backward_launch(N, d2, clamp, inv_n, x2, ldx, s, g2, ldg, g_o, to_cuda(stream));
}

void CudaFlowOps::coupling_tangent(int64_t N, int64_t d2, float clamp, const float* x2, int64_t ldx,
                                   const float* s, const float* x2_dot, int64_t ldxd,
                                   const float* o_dot, float* y2_dot, int64_t ldyd,
                                   float* s_dot) const {
  check_matrix(N, d2, ldx);
  check_matrix(N, d2, ldxd);
  check_matrix(N, d2, ldyd);
  CHECK_THROW(clamp > 0.f);
  check_ptrs(N * d2 > 0, {x2, s, x2_dot, o_dot, y2_dot, s_dot});
  coupling_tangent_launch(N, d2, clamp, x2, ldx, s, x2_dot, ldxd, o_dot, y2_dot, ldyd, s_dot,
                          to_cuda(stream));
}

void CudaFlowOps::coupling_backward_hvp(int64_t N, int64_t d2, float clamp, float inv_n,
                                        const float* x2, int64_t ldx, const float* s,
                                        const float* x2_dot, int64_t ldxd, const float* s_dot,
                                        float* g2, float* g2_dot, int64_t ldg, float* g_o,
                                        float* g_o_dot) const {
  check_matrix(N, d2, ldx);
  check_matrix(N, d2, ldxd);
  check_matrix(N, d2, ldg);
  CHECK_THROW(clamp > 0.f);
  check_ptrs(N * d2 > 0, {x2, s, x2_dot, s_dot, g2, g2_dot, g_o, g_o_dot});
  coupling_backward_hvp_launch(N, d2, clamp, inv_n, x2, ldx, s, x2_dot, ldxd, s_dot, g2, g2_dot,
                               ldg, g_o, g_o_dot, to_cuda(stream));
}

void CudaFlowOps::actnorm_forward(int64_t N, int64_t D, const float* ls, const float* b,
                                  const float* y, float* z) const {
  check_matrix(N, D, D);
  check_ptrs(N * D > 0, {ls, b, y, z});
  actnorm_forward_launch(N, D, ls, b, y, z, to_cuda(stream));
}

void CudaFlowOps::actnorm_inverse(int64_t N, int64_t D, const float* ls, const float* b,
                                  const float* z, float* y) const {
  check_matrix(N, D, D);
  check_ptrs(N * D > 0, {ls, b, z, y});
  actnorm_inverse_launch(N, D, ls, b, z, y, to_cuda(stream));
}

void CudaFlowOps::nll_rows(int64_t N, int64_t D, const float* z, const float* log_det,
                           const float* ls, float* nll) const {
  check_matrix(N, D, D);
  check_ptrs(N > 0, {log_det, nll});
  check_ptrs(N * D > 0, {z, ls});
  nll_rows_launch(N, D, z, log_det, ls, nll, to_cuda(stream));
}

void CudaFlowOps::actnorm_backward(int64_t N, int64_t D, float inv_n, const float* ls,
                                   const float* b, const float* z, float* g_y, float* g_ls,
                                   float* g_b) const {
  check_matrix(N, D, D);
  check_ptrs(D > 0, {ls, b, g_ls, g_b});
  check_ptrs(N * D > 0, {z, g_y});
  launch_col_reduce(ActnormBackwardOp{D, inv_n, ls, b, z, g_y, g_ls, g_b}, N, D, to_cuda(stream));
}

void CudaFlowOps::actnorm_tangent(int64_t N, int64_t D, const float* ls, const float* ls_dot,
                                  const float* b_dot, const float* y, const float* y_dot,
                                  float* z_dot) const {
  check_matrix(N, D, D);
  check_ptrs(N * D > 0, {ls, ls_dot, b_dot, y, y_dot, z_dot});
  actnorm_tangent_launch(N, D, ls, ls_dot, b_dot, y, y_dot, z_dot, to_cuda(stream));
}

void CudaFlowOps::actnorm_backward_hvp(int64_t N, int64_t D, float inv_n, const float* ls,
                                       const float* b, const float* ls_dot, const float* b_dot,
                                       const float* z, const float* z_dot, float* g_y,
                                       float* g_y_dot, float* g_ls, float* g_b, float* hv_ls,
                                       float* hv_b) const {
  check_matrix(N, D, D);
  check_ptrs(D > 0, {ls, b, ls_dot, b_dot, g_ls, g_b, hv_ls, hv_b});
  check_ptrs(N * D > 0, {z, z_dot, g_y, g_y_dot});
  launch_col_reduce(ActnormBackwardHvpOp{D, inv_n, ls, b, ls_dot, b_dot, z, z_dot, g_y, g_y_dot,
                                         g_ls, g_b, hv_ls, hv_b},
                    N, D, to_cuda(stream));
}

void CudaFlowOps::nonfinite_rows(int64_t N, int64_t D, const float* x, int64_t ldx,
                                 uint8_t* flags) const {
  check_matrix(N, D, ldx);
  check_ptrs(N > 0, {flags});
  check_ptrs(N * D > 0, {x});
  nonfinite_rows_launch(N, D, x, ldx, flags, to_cuda(stream));
}

void CudaFlowOps::synchronize() const {
  CUDA_CHECK_THROW(cudaStreamSynchronize(to_cuda(stream)));
}

}  // namespace mirad
