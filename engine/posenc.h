// The flow's condition c: CFlow's 2-D sin/cos positional encoding, one vector per position of
// an H x W feature map.
#pragma once

#include <cstdint>

#include "engine/buffer.h"
#include "engine/device.h"

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
