// Element formula of CFlow's 2-D sin/cos positional encoding (positionalencoding2d), shared by
// the CPU reference and the CUDA kernel, and the launchers of both backends.
#pragma once

#include <cmath>
#include <cstdint>

#include "engine/device.h"
#include "kernels/hd.h"

namespace mirad::posenc {

// Channel `channel` of the code at row y, column x, for D channels (D % 4 == 0). The first
// half encodes x, the second half y; within a half, channel pair (2i, 2i+1) is
// (sin, cos)(pos * div_term[i]), div_term[i] = exp(-2i * ln(10000) / (D/2)).
// Always double: the arguments reach x * 1 for the lowest frequency, so float sin/cos of a
// float argument would carry ~|pos| * 6e-8 of error; in double both backends round the same
// value to float and agree to an ulp. The table is built once per grid, so cost is moot.
MIRAD_HD double value_2d(int64_t D, int64_t y, int64_t x, int64_t channel) {
  const int64_t half = D / 2;
  const bool vertical = channel >= half;
  const int64_t c = vertical ? channel - half : channel;
  const int64_t i = c / 2;
  const double ln_10000 = 9.2103403719761827360719658187375;
  const double div_term = exp(-double(2 * i) * ln_10000 / double(half));
  const double arg = double(vertical ? y : x) * div_term;
  return (c % 2 == 0) ? sin(arg) : cos(arg);
}

// CPU reference (kernels/posenc_cpu.cpp): out is (H*W) x D row-major, row = y*W + x.
template <typename T>
void positional_encoding_2d_cpu(int64_t D, int64_t H, int64_t W, T* out);
// CUDA (kernels/posenc_cuda.cu): same layout, device pointer, queued on `stream`.
void positional_encoding_2d_cuda(int64_t D, int64_t H, int64_t W, float* out, Stream stream);

}  // namespace mirad::posenc
