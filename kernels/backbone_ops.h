// Backbone ops on plain NCHW float32: the per-element math shared by CPU and CUDA, the CPU
// references (kernels/backbone_ops_cpu.cpp) and the CUDA launchers (kernels/backbone_ops_cuda.cu).
// The CPU backend runs convolutions, pooling and adds through oneDNN; these references are what
// the CUDA kernels and oneDNN are both tested against.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/device.h"
#include "kernels/backbone_op_types.h"
#include "kernels/hd.h"

namespace mirad::bbops {

// Activation codes as plain ints, so that kernels need no enum conversion on the device.
enum : int { kActNone = 0, kActRelu = 1, kActRelu6 = 2 };
inline int act_code(Activation a) {
  return a == Activation::relu ? kActRelu : a == Activation::relu6 ? kActRelu6 : kActNone;
}

MIRAD_HD float activate(float v, int act) {
  // fmaxf/fminf return the non-NaN operand; a NaN feature must stay NaN so that it is caught
  // downstream instead of becoming 0 or 6, hence the explicit comparisons.
  if (act == kActRelu) return v < 0.f ? 0.f : v;
  if (act == kActRelu6) return v < 0.f ? 0.f : (v > 6.f ? 6.f : v);
  return v;
}

// A convolution on NCHW input n x c x h x w with OIHW weight o x (c/groups) x kh x kw.
struct ConvGeom {
  int64_t n, c, h, w;
  int64_t o, kh, kw;
  int64_t sh, sw, dh, dw;
  Pads pads;
  int64_t groups;
  int64_t oh, ow;
  int act;
};

// A windowed pool on NCHW n x c x h x w.
struct PoolGeom {
  int64_t n, c, h, w;
  int64_t kh, kw, sh, sw;
  Pads pads;
  int64_t oh, ow;
  bool count_include_pad;
};

// Output cell (oy, ox) of a max pool; load(iy, ix) reads one input cell of the plane as float
// (any layout or storage type). NaN propagates (a comparison alone would drop it), so that a
// broken feature cannot hide behind a pool.
template <typename Load>
MIRAD_HD float max_pool_window(const PoolGeom& g, int64_t oy, int64_t ox, const Load& load) {
  const int64_t y0 = oy * g.sh - g.pads.top, x0 = ox * g.sw - g.pads.left;
  float m = -INFINITY;
  for (int64_t ky = 0; ky < g.kh; ++ky) {
    const int64_t iy = y0 + ky;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t ix = x0 + kx;
      if (ix < 0 || ix >= g.w) continue;
      const float v = load(iy, ix);
      if (v > m || v != v) m = v;
      if (m != m) return m;
    }
  }
  return m;
}

// Output cell (oy, ox) of an average pool, load() as above. The windows never reach past the
// padded input (floor output size), so with count_include_pad the divisor is kh*kw.
template <typename Load>
MIRAD_HD float avg_pool_window(const PoolGeom& g, int64_t oy, int64_t ox, const Load& load) {
  const int64_t y0 = oy * g.sh - g.pads.top, x0 = ox * g.sw - g.pads.left;
  float sum = 0.f;
  int64_t count = 0;
  for (int64_t ky = 0; ky < g.kh; ++ky) {
    const int64_t iy = y0 + ky;
    if (iy < 0 || iy >= g.h) continue;
    for (int64_t kx = 0; kx < g.kw; ++kx) {
      const int64_t ix = x0 + kx;
      if (ix < 0 || ix >= g.w) continue;
      sum += load(iy, ix);
      ++count;
    }
  }
  const int64_t div = g.count_include_pad ? g.kh * g.kw : count;
  return sum / static_cast<float>(div);
}

// The same over one plain h x w float plane (NCHW).
MIRAD_HD float max_pool_at(const PoolGeom& g, const float* plane, int64_t oy, int64_t ox) {
  return max_pool_window(g, oy, ox, [&](int64_t iy, int64_t ix) { return plane[iy * g.w + ix]; });
}
MIRAD_HD float avg_pool_at(const PoolGeom& g, const float* plane, int64_t oy, int64_t ox) {
  return avg_pool_window(g, oy, ox, [&](int64_t iy, int64_t ix) { return plane[iy * g.w + ix]; });
}

// ---- CPU references (single-threaded nested loops; clarity over speed) ----
// Direct convolution with bias (may be null) and activation: the reference oneDNN and cuDNN
// are tested against.
void conv2d_cpu(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y);
// Copies x (n x c x h x w) into y (n x c x (h+top+bottom) x (w+left+right)), `value` around.
void pad_cpu(int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value, const float* x,
             float* y);
// In place on y (n x c x hw): y = act(y + bias[c]); bias may be null.
void bias_act_cpu(int64_t n, int64_t c, int64_t hw, const float* bias, int act, float* y);
// y = act(a + b), count elements; y may alias a or b.
void add_act_cpu(int64_t count, const float* a, const float* b, int act, float* y);
// y = act(x); y may alias x.
void act_cpu(int64_t count, const float* x, int act, float* y);
// Max over each window; padded cells never win (they count as -inf).
void max_pool_cpu(const PoolGeom& g, const float* x, float* y);
// Mean over each window: over its in-bounds cells, or over kh*kw with count_include_pad.
void avg_pool_cpu(const PoolGeom& g, const float* x, float* y);
// y[i] = mean of x[i*hw .. i*hw+hw), for rows = n*c.
void global_avg_pool_cpu(int64_t rows, int64_t hw, const float* x, float* y);
// Softmax over the middle axis of x viewed as outer x c x inner.
void softmax_cpu(int64_t outer, int64_t c, int64_t inner, const float* x, float* y);
// y (n x o) = act(x (n x k) * w^T (w: o x k) + bias).
void fully_connected_cpu(int64_t n, int64_t k, int64_t o, const float* x, const float* w,
                         const float* bias, int act, float* y);

#ifdef MIRAD_HAVE_CUDA
// ---- CUDA launchers: same contracts as the CPU references, device pointers, on `stream` ----
void pad_cuda(int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value, const float* x,
              float* y, Stream stream);
void bias_act_cuda(int64_t n, int64_t c, int64_t hw, const float* bias, int act, float* y,
                   Stream stream);
void add_act_cuda(int64_t count, const float* a, const float* b, int act, float* y, Stream stream);
void act_cuda(int64_t count, const float* x, int act, float* y, Stream stream);
void max_pool_cuda(const PoolGeom& g, const float* x, float* y, Stream stream);
void avg_pool_cuda(const PoolGeom& g, const float* x, float* y, Stream stream);
void global_avg_pool_cuda(int64_t rows, int64_t hw, const float* x, float* y, Stream stream);
void softmax_cuda(int64_t outer, int64_t c, int64_t inner, const float* x, float* y, Stream stream);
#endif

}  // namespace mirad::bbops
