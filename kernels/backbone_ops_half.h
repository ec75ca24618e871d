// The reduced-precision backbone's storage and ops: activations held as 16-bit floats (FP16 or
// BF16) in NHWC order, the layout cuDNN's tensor-core convolutions want, with every product and
// sum done in float32 and each op's result rounded once when stored (round to nearest even). A
// convolution's output is stored by cuDNN, then bias + activation store it again: two
// roundings there.
//
// Each op has a CPU reference here (kernels/backbone_ops_half_cpu.cpp) with the same contract as
// its CUDA launcher (kernels/backbone_ops_half_cuda.cu). Storage is uint16_t bit patterns in
// both, so that this header needs no CUDA type. The references decode to float, run the same
// per-element math as the float32 ops (kernels/backbone_ops.h), and round once on store.
#pragma once

#include <cstdint>

#include "core/device.h"
#include "kernels/backbone_op_types.h"
#include "kernels/backbone_ops.h"

namespace mirad::bbops {

enum class Half { fp16, bf16 };

// FP16 overflows at 65520 to inf, which relu6 would turn into a plausible 6 (and relu keep as
// inf). The 16-bit ops map +-inf to NaN before an activation, so that an overflow reaches the
// flow's non-finite checks instead of passing for a feature. (inf - inf is NaN on any device.)
MIRAD_HD float overflow_to_nan(float v) {
  return (v == INFINITY || v == -INFINITY) ? v - v : v;
}

// float -> 16-bit pattern, rounding to nearest even as __float2half_rn / __float2bfloat16_rn do:
// FP16 overflows to +-inf past 65504 (65520 and up), keeps subnormals down to 2^-24 and flushes
// below 2^-25; BF16 keeps float's range with 8 mantissa bits. NaN stays NaN.
uint16_t to_half_bits(Half t, float v);
float from_half_bits(Half t, uint16_t bits);
inline float round_to_half(Half t, float v) { return from_half_bits(t, to_half_bits(t, v)); }

// ---- CPU references (NHWC, 16-bit storage; same contracts as the CUDA launchers below) ----
// Layout changes: float NCHW -> half NHWC (the backbone's input), half NHWC -> float NCHW (its
// taps), half NHWC -> half NCHW (before RESHAPE of a spatial map, whose flattening order is
// NCHW's).
void to_nhwc_half_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w, const float* x,
                      uint16_t* y);
void nhwc_half_to_float_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                            const uint16_t* x, float* y);
void nhwc_to_nchw_half_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                           const uint16_t* x, uint16_t* y);
// x (n x h x w x c) into y (n x (h+top+bottom) x (w+left+right) x c), `value` around.
void pad_nhwc_half_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value,
                       const uint16_t* x, uint16_t* y);
// In place on y (count elements, channel innermost, c channels): y = act(y + bias[ch]);
// bias (float32) may be null. This op and the two below turn +-inf into NaN (overflow_to_nan).
void bias_act_nhwc_half_cpu(Half t, int64_t count, int64_t c, const float* bias, int act,
                            uint16_t* y);
// y = act(a + b) and y = act(x), any layout; y may alias an input.
void add_act_half_cpu(Half t, int64_t count, const uint16_t* a, const uint16_t* b, int act,
                      uint16_t* y);
void act_half_cpu(Half t, int64_t count, const uint16_t* x, int act, uint16_t* y);
// Windowed pools over NHWC; same geometry and rules as max_pool_cpu / avg_pool_cpu.
void max_pool_nhwc_half_cpu(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y);
void avg_pool_nhwc_half_cpu(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y);
// y (n x c) = mean over the hw positions of x (n x hw x c), summed in float32 in position order.
void global_avg_pool_nhwc_half_cpu(Half t, int64_t n, int64_t hw, int64_t c, const uint16_t* x,
                                   uint16_t* y);
// Softmax over the middle axis of outer x c x inner (NHWC channels: outer = n*h*w, inner = 1).
void softmax_half_cpu(Half t, int64_t outer, int64_t c, int64_t inner, const uint16_t* x,
                      uint16_t* y);

#ifdef MIRAD_HAVE_CUDA
// ---- CUDA launchers: device pointers, on `stream` ----
void to_nhwc_half_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w, const float* x,
                       uint16_t* y, Stream stream);
void nhwc_half_to_float_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                             const uint16_t* x, float* y, Stream stream);
void nhwc_to_nchw_half_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                            const uint16_t* x, uint16_t* y, Stream stream);
void pad_nhwc_half_cuda(Half t, int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value,
                        const uint16_t* x, uint16_t* y, Stream stream);
void bias_act_nhwc_half_cuda(Half t, int64_t count, int64_t c, const float* bias, int act,
                             uint16_t* y, Stream stream);
void add_act_half_cuda(Half t, int64_t count, const uint16_t* a, const uint16_t* b, int act,
                       uint16_t* y, Stream stream);
void act_half_cuda(Half t, int64_t count, const uint16_t* x, int act, uint16_t* y,
                   Stream stream);
void max_pool_nhwc_half_cuda(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y,
                             Stream stream);
void avg_pool_nhwc_half_cuda(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y,
                             Stream stream);
void global_avg_pool_nhwc_half_cuda(Half t, int64_t n, int64_t hw, int64_t c, const uint16_t* x,
                                    uint16_t* y, Stream stream);
void softmax_half_cuda(Half t, int64_t outer, int64_t c, int64_t inner, const uint16_t* x,
                       uint16_t* y, Stream stream);
#endif

}  // namespace mirad::bbops
