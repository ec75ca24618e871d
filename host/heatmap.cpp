// Heatmap overlays: jet colour map and alpha blending.
#include "host/heatmap.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace mirad {

void jet_colour(double t, uint8_t rgb[3]) {
  t = std::clamp(t, 0.0, 1.0);
  // Piecewise-linear jet: each channel is a trapezoid over [0, 1].
  auto ramp = [](double x) { return std::clamp(1.5 - std::abs(x), 0.0, 1.0); };
  const double r = ramp(4.0 * t - 3.0), g = ramp(4.0 * t - 2.0), b = ramp(4.0 * t - 1.0);
  rgb[0] = uint8_t(std::lround(255.0 * r));
  rgb[1] = uint8_t(std::lround(255.0 * g));
  rgb[2] = uint8_t(std::lround(255.0 * b));
}

Image heatmap_overlay(const Image& image, const float* map, int height, int width, double lo,
                      double hi) {
  CHECK_INPUT(image.height() == height && image.width() == width,
              "heatmap: map is {} x {}, image {} x {}", height, width, image.height(),
              image.width());
  CHECK_INPUT(image.type() == PixelType::u8, "heatmap: 8-bit images only");
  const double span = hi > lo ? hi - lo : 1.0;
  Image out(height, width, 3);
  const uint8_t* src = image.u8();
  uint8_t* dst = out.u8();
  const int c = image.channels();
  for (int64_t i = 0; i < int64_t(height) * width; ++i) {
    const float v = map[i];
    const double t = std::isfinite(v) ? (double(v) - lo) / span : 1.0;
    uint8_t col[3];
    jet_colour(t, col);
    for (int k = 0; k < 3; ++k) {
      const double px = src[i * c + (c == 3 ? k : 0)];
      dst[i * 3 + k] = uint8_t(std::lround(0.5 * px + 0.5 * col[k]));
    }
  }
  return out;
}

}  // namespace mirad
