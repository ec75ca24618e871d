// Shared internals of the benchmark generator: wrapped bilinear sampling, periodic value noise,
// anti-aliased stroke and blob coverage, and the defect renderers' entry point.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include <nlohmann/json.hpp>

#include "tools/synth/synth.h"

namespace mirad::synth::detail {

inline constexpr double kPi = 3.14159265358979323846;

inline double clamp01(double v) { return v < 0 ? 0 : (v > 1 ? 1 : v); }
inline double smoothstep(double e0, double e1, double x) {
  const double t = clamp01((x - e0) / (e1 - e0));
  return t * t * (3 - 2 * t);
}
inline double lerp(double a, double b, double t) { return a + (b - a) * t; }
// JSON parameters are rounded so synth.json stays readable; the image uses the exact values.
inline double r4(double v) { return std::round(v * 1e4) / 1e4; }
inline int wrap_index(int i, int n) {
  const int m = i % n;
  return m < 0 ? m + n : m;
}

// Bilinear sample at continuous (x, y), pixel centres at integer + 0.5, wrapping around.
inline void sample_wrap(const Canvas& t, double x, double y, float out[3]) {
  const double fx = x - 0.5, fy = y - 0.5;
  const double x0f = std::floor(fx), y0f = std::floor(fy);
  const float wx = static_cast<float>(fx - x0f), wy = static_cast<float>(fy - y0f);
  const int x0 = wrap_index(static_cast<int>(x0f), t.width), y0 = wrap_index(static_cast<int>(y0f), t.height);
  const int x1 = x0 + 1 == t.width ? 0 : x0 + 1, y1 = y0 + 1 == t.height ? 0 : y0 + 1;
  const float *a = t.px(x0, y0), *b = t.px(x1, y0), *c = t.px(x0, y1), *d = t.px(x1, y1);
  for (int k = 0; k < 3; ++k) {
    const float top = a[k] + (b[k] - a[k]) * wx, bottom = c[k] + (d[k] - c[k]) * wx;
    out[k] = top + (bottom - top) * wy;
  }
}

// Mean colour of a Canvas region (clipped to the canvas).
inline void region_mean(const Canvas& c, int x0, int y0, int x1, int y1, double mean[3]) {
  x0 = std::max(x0, 0), y0 = std::max(y0, 0);
  x1 = std::min(x1, c.width), y1 = std::min(y1, c.height);
  mean[0] = mean[1] = mean[2] = 0;
  double n = 0;
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x, n += 1)
      for (int k = 0; k < 3; ++k) mean[k] += c.px(x, y)[k];
  for (int k = 0; k < 3; ++k) mean[k] = n > 0 ? mean[k] / n : 128.0;
}

// Value noise on a periodic lattice (period_x x period_y cells), smoothly interpolated, so a
// texture built from it tiles when the lattice period divides the texture's size.
class PeriodicNoise {
 public:
  PeriodicNoise(int period_x, int period_y, Rng& rng) : m_px(period_x), m_py(period_y) {
    m_values.resize(static_cast<std::size_t>(m_px) * m_py);
    for (auto& v : m_values) v = static_cast<float>(rng.uniform(-1.0, 1.0));
  }
  // (u, v) in lattice cells; result in about [-1, 1].
  double at(double u, double v) const {
    const double fu = std::floor(u), fv = std::floor(v);
    const int i0 = wrap_index(static_cast<int>(fu), m_px), j0 = wrap_index(static_cast<int>(fv), m_py);
    const int i1 = i0 + 1 == m_px ? 0 : i0 + 1, j1 = j0 + 1 == m_py ? 0 : j0 + 1;
    const double su = smooth(u - fu), sv = smooth(v - fv);
    const double a = value(i0, j0), b = value(i1, j0), c = value(i0, j1), d = value(i1, j1);
    return lerp(lerp(a, b, su), lerp(c, d, su), sv);
  }

 private:
  static double smooth(double t) { return t * t * t * (t * (t * 6 - 15) + 10); }
  double value(int i, int j) const { return m_values[static_cast<std::size_t>(j) * m_px + i]; }
  int m_px, m_py;
  std::vector<float> m_values;
};

// Fractal sum of periodic noise: octave o has period (px << o, py << o), amplitude gain^o;
// sampled at texture coordinates (x, y) in [0, size), so the result tiles with period size.
class Fbm {
 public:
  Fbm(int period_x, int period_y, int octaves, double gain, Rng& rng) : m_gain(gain) {
    for (int o = 0; o < octaves; ++o) m_octaves.emplace_back(period_x << o, period_y << o, rng);
    m_periods.resize(octaves);
    for (int o = 0; o < octaves; ++o) m_periods[o] = {double(period_x << o), double(period_y << o)};
  }
  double at(double x, double y, double size) const {
    double sum = 0, amp = 1, norm = 0;
    for (std::size_t o = 0; o < m_octaves.size(); ++o) {
      sum += amp * m_octaves[o].at(x / size * m_periods[o][0], y / size * m_periods[o][1]);
      norm += amp;
      amp *= m_gain;
    }
    return sum / norm;
  }

 private:
  double m_gain;
  std::vector<PeriodicNoise> m_octaves;
  std::vector<std::array<double, 2>> m_periods;
};

// Per-pixel coverage in [0, 1] of a drawn shape; `render` drives the pixel change, `mask` the
// ground truth (drawn with at least about a pixel of width, so hair-thin strokes still mark
// the pixels a person would circle).
struct Coverage {
  int width = 0, height = 0;
  std::vector<float> render, mask;
  Coverage(int w, int h)
      : width(w), height(h), render(static_cast<std::size_t>(w) * h, 0.f),
        mask(static_cast<std::size_t>(w) * h, 0.f) {}
};

// A capsule from p0 to p1 with radius interpolated r0 -> r1 and strength s0 -> s1, max-blended
// into `cov`. Coverage falls off over one pixel at the edge, which anti-aliases the stroke.
void stamp_capsule(Coverage& cov, double x0, double y0, double x1, double y1, double r0,
                   double r1, double s0, double s1, double mask_min_radius);

// Irregular closed blob: radius R * (1 + sum_k a_k cos(k phi + p_k)), k = 2..5.
struct Blob {
  double cx = 0, cy = 0, radius = 10, angle = 0, aspect = 1;
  double amp[4] = {0, 0, 0, 0}, phase[4] = {0, 0, 0, 0};
  static Blob random(Rng& rng, double cx, double cy, double radius, double irregularity);
  // Signed distance-like value: < 0 inside, in units of pixels (approximate near the edge).
  double signed_distance(double x, double y) const;
  nlohmann::json to_json() const;
};

// Draws one defect of `type` into `canvas`, its ground truth into `mask` (0/1 per pixel);
// returns the parameters. One attempt: the caller checks the mask area and retries.
nlohmann::json draw_defect(const CategoryContext& ctx, DefectType type, Canvas& canvas,
                           std::vector<uint8_t>& mask, Rng& rng);

}  // namespace mirad::synth::detail
