// Element formula of CFlow's 2-D sin/cos positional encoding (positionalencoding2d), shared by
// the CPU reference and the CUDA kernel, and the launchers of both backends.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/buffer.h"
#include "core/device.h"
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

// The flow's condition c: one positional-encoding vector per position of an H x W feature map
// (dispatching to the launchers above).
namespace mirad {


// Writes the (H*W) x D row-major code table to out (on device d): row y*W + x holds
// [sin(x*f0), cos(x*f0), sin(x*f1), cos(x*f1), ..., sin(y*f0), cos(y*f0), ...] with
// f_i = 10000^(-2i/(D/2)), i < D/4, i.e. CFlow's positionalencoding2d transposed from its
// D x H x W layout. Values are computed in double and rounded once, so they differ from
// CFlow's float32 torch computation by rounding only. CUDA work is queued on s.
// Throws InputError unless D > 0, D % 4 == 0, H > 0 and W > 0.
void positional_encoding_2d(int64_t D, int64_t H, int64_t W, float* out, Device d, Stream s = {});
// float64 CPU variant, for tests and double-precision flow checks.
void positional_encoding_2d(int64_t D, int64_t H, int64_t W, double* out);
// Allocating convenience form: a new (H*W) x D buffer on d (filled when the stream reaches it).
Buffer<float> positional_encoding_2d(int64_t D, int64_t H, int64_t W, Device d, Stream s = {});

}  // namespace mirad
