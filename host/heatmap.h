// Anomaly-map evidence images: a map at the image's resolution, coloured with a fixed scale
// (the model's, so colours mean the same in every image) and blended over the image.
#pragma once

#include <filesystem>

#include "host/image.h"

namespace mirad {

// Jet colour of t in [0, 1] (blue -> cyan -> yellow -> red), as 8-bit RGB.
void jet_colour(double t, uint8_t rgb[3]);

// The image (u8, gray or RGB) with map (height x width floats, the image's size) blended in:
// t = clamp((v - lo) / (hi - lo), 0, 1), pixel = (1 - a) * image + a * jet(t) with a = 0.5.
// NaN or Inf map values show as the top of the scale. InputError on a size mismatch.
Image heatmap_overlay(const Image& image, const float* map, int height, int width, double lo,
                      double hi);

}  // namespace mirad
