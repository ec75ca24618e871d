// CUDA feature layout ops: a shared-memory tiled transpose per image ([C, HW] -> [HW, C]), a
// row gather that turns bad indices into NaN rows (optionally counted), and a table repeat.

#include <algorithm>
#include <cmath>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/patch_ops.h"

namespace mirad::patchops {
namespace {

constexpr int kBlock = 256;
constexpr int kTile = 32;     // transpose tile: 32 x 32 floats
constexpr int kTileRows = 8;  // threads per tile column: each thread moves 4 entries

using cuda::first_index;
using cuda::grid_stride;
using cuda::to_cuda;

// Up to 16 resident blocks per SM; grid-stride loops cover the rest.
int grid_for(int64_t work_items, int per_block) {
  return cuda::grid_per_sm(work_items, per_block, 16);
}

// Tiles are numbered over (image, channel tile, position tile) and walked grid-stride, so no
// grid dimension limit applies to n, C or HW. Reads are coalesced along HW, writes along C;
// the +1 column keeps the transposed shared-memory reads free of bank conflicts.
__global__ void chw_to_rows_kernel(int64_t n, int64_t C, int64_t HW, const float* __restrict__ in,
                                   float* __restrict__ out) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t tiles_c = (C + kTile - 1) / kTile;
  const int64_t tiles_p = (HW + kTile - 1) / kTile;
  const int64_t n_tiles = n * tiles_c * tiles_p;
  for (int64_t t = blockIdx.x; t < n_tiles; t += gridDim.x) {
    const int64_t img = t / (tiles_c * tiles_p);
    const int64_t c0 = (t / tiles_p) % tiles_c * kTile;
    const int64_t p0 = t % tiles_p * kTile;
    const float* src = in + img * C * HW;
    float* dst = out + img * C * HW;
    for (int r = threadIdx.y; r < kTile; r += kTileRows) {
      const int64_t c = c0 + r, p = p0 + threadIdx.x;
      if (c < C && p < HW) tile[r][threadIdx.x] = src[c * HW + p];
    }
    __syncthreads();
    for (int r = threadIdx.y; r < kTile; r += kTileRows) {
      const int64_t p = p0 + r, c = c0 + threadIdx.x;
      if (p < HW && c < C) dst[p * C + c] = tile[threadIdx.x][r];
    }
    __syncthreads();  // the next tile overwrites `tile`
  }
}

// Features first (m*C entries), then the condition (m*Cc): one flat grid-stride walk each.
__global__ void gather_rows_kernel(int64_t m, const int64_t* __restrict__ idx,
                                   const float* __restrict__ X, int64_t C, int64_t n_rows,
                                   const float* __restrict__ P, int64_t HW, int64_t Cc,
                                   float* __restrict__ out_x, float* __restrict__ out_c,
                                   unsigned long long* invalid_count) {
  const float nan = __int_as_float(0x7fc00000);
  for (int64_t i = first_index(); i < m * C; i += grid_stride()) {
    const int64_t j = i / C, c = i % C;
    const int64_t row = idx[j];
    const bool valid = row >= 0 && row < n_rows;
    out_x[i] = valid ? X[row * C + c] : nan;
    // Counted once per bad entry of idx: by the thread that writes its first column.
    if (!valid && c == 0 && invalid_count) atomicAdd(invalid_count, 1ull);
  }
  if (!out_c) return;
  for (int64_t i = first_index(); i < m * Cc; i += grid_stride()) {
    const int64_t j = i / Cc, c = i % Cc;
    const int64_t row = idx[j];
    const bool valid = row >= 0 && row < n_rows;
    out_c[i] = valid ? P[position_of_row(row, HW) * Cc + c] : nan;
  }
}

__global__ void repeat_rows_kernel(int64_t total, int64_t table, const float* __restrict__ P,
                                   float* __restrict__ out) {
  for (int64_t i = first_index(); i < total; i += grid_stride()) out[i] = P[i % table];
}

}  // namespace

void chw_to_rows_cuda(int64_t n, int64_t C, int64_t HW, const float* in, float* out,
                      Stream stream) {
  if (n == 0) return;
  const int64_t n_tiles = n * ((C + kTile - 1) / kTile) * ((HW + kTile - 1) / kTile);
  const int blocks = static_cast<int>(std::min<int64_t>(n_tiles, int64_t(cuda::sm_count()) * 32));
  chw_to_rows_kernel<<<blocks, dim3(kTile, kTileRows), 0, to_cuda(stream)>>>(n, C, HW, in, out);
  CUDA_CHECK_LAUNCH();
}

void gather_rows_cuda(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                      const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c,
                      unsigned long long* invalid_count, Stream stream) {
  if (m == 0) return;
  const int64_t work = m * std::max(C, out_c ? Cc : int64_t(0));
  gather_rows_kernel<<<grid_for(work, kBlock), kBlock, 0, to_cuda(stream)>>>(
      m, idx, X, C, n_rows, P, HW, Cc, out_x, out_c, invalid_count);
  CUDA_CHECK_LAUNCH();
}

void repeat_rows_cuda(int64_t n, int64_t HW, int64_t Cc, const float* P, float* out,
                      Stream stream) {
  const int64_t total = n * HW * Cc;
  if (total == 0) return;
  repeat_rows_kernel<<<grid_for(total, kBlock), kBlock, 0, to_cuda(stream)>>>(total, HW * Cc, P, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mirad::patchops
