// CPU references of the backbone ops (plain NCHW nested loops), the ground truth for the
// oneDNN backend and the CUDA kernels alike.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/backbone_ops.h"

namespace mirad::bbops {

void conv2d_cpu(const ConvGeom& g, const float* x, const float* w, const float* bias, float* y) {
  const int64_t cg = g.c / g.groups, og = g.o / g.groups;
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t o = 0; o < g.o; ++o) {
      const int64_t grp = o / og;
      const float* wo = w + o * cg * g.kh * g.kw;
      float* yo = y + (n * g.o + o) * g.oh * g.ow;
      for (int64_t oy = 0; oy < g.oh; ++oy)
        for (int64_t ox = 0; ox < g.ow; ++ox) {
          // Accumulate in double: the reference should not carry float rounding of its own.
          double acc = bias ? bias[o] : 0.0;
          for (int64_t ci = 0; ci < cg; ++ci) {
            const float* xp = x + (n * g.c + grp * cg + ci) * g.h * g.w;
            for (int64_t ky = 0; ky < g.kh; ++ky) {
              const int64_t iy = oy * g.sh - g.pads.top + ky * g.dh;
              if (iy < 0 || iy >= g.h) continue;
              for (int64_t kx = 0; kx < g.kw; ++kx) {
                const int64_t ix = ox * g.sw - g.pads.left + kx * g.dw;
                if (ix < 0 || ix >= g.w) continue;
                acc += double(xp[iy * g.w + ix]) * wo[(ci * g.kh + ky) * g.kw + kx];
              }
            }
          }
          yo[oy * g.ow + ox] = activate(static_cast<float>(acc), g.act);
        }
    }
}

void pad_cpu(int64_t n, int64_t c, int64_t h, int64_t w, Pads p, float value, const float* x,
             float* y) {
  const int64_t ph = h + p.top + p.bottom, pw = w + p.left + p.right;
  for (int64_t plane = 0; plane < n * c; ++plane)
    for (int64_t yy = 0; yy < ph; ++yy)
      for (int64_t xx = 0; xx < pw; ++xx) {
        const int64_t iy = yy - p.top, ix = xx - p.left;
        const bool inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
        y[(plane * ph + yy) * pw + xx] = inside ? x[(plane * h + iy) * w + ix] : value;
      }
}

void bias_act_cpu(int64_t n, int64_t c, int64_t hw, const float* bias, int act, float* y) {
  for (int64_t i = 0; i < n * c; ++i) {
    const float b = bias ? bias[i % c] : 0.f;
    for (int64_t k = 0; k < hw; ++k) y[i * hw + k] = activate(y[i * hw + k] + b, act);
  }
}

void add_act_cpu(int64_t count, const float* a, const float* b, int act, float* y) {
  for (int64_t i = 0; i < count; ++i) y[i] = activate(a[i] + b[i], act);
}

void act_cpu(int64_t count, const float* x, int act, float* y) {
  for (int64_t i = 0; i < count; ++i) y[i] = activate(x[i], act);
}

void max_pool_cpu(const PoolGeom& g, const float* x, float* y) {
  for (int64_t plane = 0; plane < g.n * g.c; ++plane)
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox)
        y[(plane * g.oh + oy) * g.ow + ox] = max_pool_at(g, x + plane * g.h * g.w, oy, ox);
}

void avg_pool_cpu(const PoolGeom& g, const float* x, float* y) {
  for (int64_t plane = 0; plane < g.n * g.c; ++plane)
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox)
        y[(plane * g.oh + oy) * g.ow + ox] = avg_pool_at(g, x + plane * g.h * g.w, oy, ox);
}

void global_avg_pool_cpu(int64_t rows, int64_t hw, const float* x, float* y) {
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t k = 0; k < hw; ++k) s += x[r * hw + k];
    y[r] = static_cast<float>(s / double(hw));
  }
}

void softmax_cpu(int64_t outer, int64_t c, int64_t inner, const float* x, float* y) {
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* xp = x + o * c * inner + i;
      float* yp = y + o * c * inner + i;
      // Subtracting the max keeps exp() in range; the result is mathematically the same.
      float m = -INFINITY;
      for (int64_t k = 0; k < c; ++k) m = std::max(m, xp[k * inner]);
      double s = 0;
      for (int64_t k = 0; k < c; ++k) s += std::exp(double(xp[k * inner]) - m);
      for (int64_t k = 0; k < c; ++k)
        yp[k * inner] = static_cast<float>(std::exp(double(xp[k * inner]) - m) / s);
    }
}

void fully_connected_cpu(int64_t n, int64_t k, int64_t o, const float* x, const float* w,
                         const float* bias, int act, float* y) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < o; ++j) {
      double acc = bias ? bias[j] : 0.0;
      for (int64_t i = 0; i < k; ++i) acc += double(x[r * k + i]) * w[j * k + i];
      y[r * o + j] = activate(static_cast<float>(acc), act);
    }
}

}  // namespace mirad::bbops
