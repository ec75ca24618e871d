// CPU references of the reduced-precision backbone ops (kernels/backbone_ops_half.h): decode to
// float, the float32 ops' per-element math, one rounding on store. The CUDA kernels are tested
// against these, and the rounding against hand-computed patterns.
#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/backbone_ops_half.h"

namespace mirad::bbops {
namespace {

uint16_t float_to_fp16(float v) {
  const uint32_t x = std::bit_cast<uint32_t>(v);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t a = x & 0x7fffffffu;
  if (a > 0x7f800000u)  // NaN: quiet, with a nonzero mantissa whatever bits survive the shift
    return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return sign | 0x7c00u;  // 65520 and up (and inf) round to inf
  if (a >= 0x38800000u) {                        // normal in FP16: 2^-14 and up
    uint32_t h = ((a >> 23) - 127 + 15) << 10 | ((a >> 13) & 0x3ffu);
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry moves into the exponent
    return static_cast<uint16_t>(sign | h);
  }
  // Subnormal in FP16 (units of 2^-24): the significand shifted, rounded to nearest even.
  const uint32_t e = a >> 23;
  const uint32_t m = (a & 0x7fffffu) | (e ? 0x800000u : 0u);
  const uint32_t shift = std::min<uint32_t>(126 - e, 31);  // value = m * 2^(e-126) units
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

float fp16_to_float(uint16_t b) {
  const float sign = (b & 0x8000u) ? -1.f : 1.f;
  const int e = (b >> 10) & 0x1f, m = b & 0x3ff;
  if (e == 0) return sign * std::ldexp(static_cast<float>(m), -24);
  if (e == 31) return m ? std::numeric_limits<float>::quiet_NaN() : sign * INFINITY;
  return sign * std::ldexp(static_cast<float>(1024 + m), e - 25);
}

uint16_t float_to_bf16(float v) {
  const uint32_t x = std::bit_cast<uint32_t>(v);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  // Adding 0x7fff plus the kept lowest bit rounds to nearest even, and overflows to inf.
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

}  // namespace

uint16_t to_half_bits(Half t, float v) {
  return t == Half::fp16 ? float_to_fp16(v) : float_to_bf16(v);
}

float from_half_bits(Half t, uint16_t bits) {
  return t == Half::fp16 ? fp16_to_float(bits) : bf16_to_float(bits);
}

void to_nhwc_half_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w, const float* x,
                      uint16_t* y) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < h * w; ++p)
      for (int64_t k = 0; k < c; ++k)
        y[(b * h * w + p) * c + k] = to_half_bits(t, x[(b * c + k) * h * w + p]);
}

void nhwc_half_to_float_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w,
                            const uint16_t* x, float* y) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < h * w; ++p)
      for (int64_t k = 0; k < c; ++k)
        y[(b * c + k) * h * w + p] = from_half_bits(t, x[(b * h * w + p) * c + k]);
}

void nhwc_to_nchw_half_cpu(Half, int64_t n, int64_t c, int64_t h, int64_t w, const uint16_t* x,
                           uint16_t* y) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t p = 0; p < h * w; ++p)
      for (int64_t k = 0; k < c; ++k) y[(b * c + k) * h * w + p] = x[(b * h * w + p) * c + k];
}

void pad_nhwc_half_cpu(Half t, int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value,
                       const uint16_t* x, uint16_t* y) {
  const int64_t ph = h + p.top + p.bottom, pw = w + p.left + p.right;
  const uint16_t fill = to_half_bits(t, value);
  for (int64_t b = 0; b < n; ++b)
    for (int64_t yy = 0; yy < ph; ++yy)
      for (int64_t xx = 0; xx < pw; ++xx) {
        const int64_t iy = yy - p.top, ix = xx - p.left;
        const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
        for (int64_t k = 0; k < c; ++k)
          y[((b * ph + yy) * pw + xx) * c + k] = inside ? x[((b * h + iy) * w + ix) * c + k] : fill;
      }
}

void bias_act_nhwc_half_cpu(Half t, int64_t count, int64_t c, const float* bias, int act,
                            uint16_t* y) {
  for (int64_t i = 0; i < count; ++i) {
    const float b = bias ? bias[i % c] : 0.f;
    y[i] = to_half_bits(t, activate(overflow_to_nan(from_half_bits(t, y[i]) + b), act));
  }
}

void add_act_half_cpu(Half t, int64_t count, const uint16_t* a, const uint16_t* b, int act,
                      uint16_t* y) {
  for (int64_t i = 0; i < count; ++i)
    y[i] = to_half_bits(
        t, activate(overflow_to_nan(from_half_bits(t, a[i]) + from_half_bits(t, b[i])), act));
}

void act_half_cpu(Half t, int64_t count, const uint16_t* x, int act, uint16_t* y) {
  for (int64_t i = 0; i < count; ++i)
    y[i] = to_half_bits(t, activate(overflow_to_nan(from_half_bits(t, x[i])), act));
}

namespace {
template <bool kMax>
void pool_nhwc_half(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y) {
  for (int64_t b = 0; b < g.n; ++b)
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox)
        for (int64_t k = 0; k < g.c; ++k) {
          auto load = [&](int64_t iy, int64_t ix) {
            return from_half_bits(t, x[((b * g.h + iy) * g.w + ix) * g.c + k]);
          };
          const float v = kMax ? max_pool_window(g, oy, ox, load) : avg_pool_window(g, oy, ox, load);
          y[((b * g.oh + oy) * g.ow + ox) * g.c + k] = to_half_bits(t, v);
        }
}
}  // namespace

void max_pool_nhwc_half_cpu(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y) {
  pool_nhwc_half<true>(t, g, x, y);
}

void avg_pool_nhwc_half_cpu(Half t, const PoolGeom& g, const uint16_t* x, uint16_t* y) {
  pool_nhwc_half<false>(t, g, x, y);
}

void global_avg_pool_nhwc_half_cpu(Half t, int64_t n, int64_t hw, int64_t c, const uint16_t* x,
                                   uint16_t* y) {
  for (int64_t b = 0; b < n; ++b)
    for (int64_t k = 0; k < c; ++k) {
      float s = 0.f;
      for (int64_t p = 0; p < hw; ++p) s += from_half_bits(t, x[(b * hw + p) * c + k]);
      y[b * c + k] = to_half_bits(t, s / static_cast<float>(hw));
    }
}

void softmax_half_cpu(Half t, int64_t outer, int64_t c, int64_t inner, const uint16_t* x,
                      uint16_t* y) {
  std::vector<float> xf(outer * c * inner), yf(xf.size());
  for (std::size_t i = 0; i < xf.size(); ++i) xf[i] = from_half_bits(t, x[i]);
  softmax_cpu(outer, c, inner, xf.data(), yf.data());
  for (std::size_t i = 0; i < yf.size(); ++i) y[i] = to_half_bits(t, yf[i]);
}

}  // namespace mirad::bbops
