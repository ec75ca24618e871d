// Host-side preprocessing: PIL-compatible antialiased bilinear resize, centre crop, and
// per-backbone normalisation into a float CHW tensor.
#pragma once

#include <array>
#include <string_view>
#include <vector>

#include "host/image.h"

namespace mirad {

// Which of the two separable passes runs first. For 8-bit images it decides how the
// intermediate result is rounded, so it shows as +-1 differences in a few pixels.
enum class PassOrder {
  pillow,            // Pillow >= 13: vertical first when the height shrinks much more than the
                     // width (see resize.cpp), else horizontal first
  horizontal_first,  // Pillow <= 12: always horizontal first
};

// Resizes like PIL's Image.resize(size, Image.BILINEAR): a triangle filter whose support grows
// with the downscale factor (so downscaling antialiases), applied separably. u8 images are
// rounded to 8 bits after each pass with PIL's 22-bit fixed-point weights, which makes the
// output match Pillow's pixel for pixel; f32 images accumulate in double with no rounding, as
// PIL's "F" mode. A pass whose size does not change is skipped, as in PIL.
Image resize_bilinear(const Image& src, int out_height, int out_width,
                      PassOrder order = PassOrder::pillow);

// The centre crop_height x crop_width window; offsets round((size - crop) / 2) with ties to
// even, as torchvision's CenterCrop (Python's round). InputError if the crop is larger than
// the image.
Image center_crop(const Image& src, int crop_height, int crop_width);

// Per-channel normalisation on the 0..1 scale: x = (v / 255 - mean[c]) / std[c]. Double, so
// that presets such as mean = std = 128/255 give (v - 128) / 128 exactly.
struct Normalization {
  std::array<double, 3> mean{0.0, 0.0, 0.0};
  std::array<double, 3> std{1.0, 1.0, 1.0};
};

// Named presets, so a backbone recipe can say which one it was trained with:
//   "imagenet"          torchvision: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)
//   "tf_inception"      (u8 - 128) / 128, as the MobileNetV2 reference fixture uses
//   "efficientnet_lite" (u8 - 127) / 128, as TF's EfficientNet-Lite
//   "unit"              v / 255
// InputError for any other name.
Normalization normalization_preset(std::string_view name);

// Writes a 3 x H x W planar float tensor. Gray images are replicated into the 3 channels,
// since every backbone here takes RGB.
void normalize_to_chw(const Image& src, const Normalization& norm, float* out);
std::vector<float> normalize_to_chw(const Image& src, const Normalization& norm);

// The whole chain for one image: resize, optional centre crop (0 = none), normalise.
struct PreprocessOptions {
  int resize_height = 224, resize_width = 224;
  int crop_height = 0, crop_width = 0;
  Normalization norm = normalization_preset("imagenet");
};
// Output height/width after preprocessing (the crop if set, else the resize).
int preprocessed_height(const PreprocessOptions& opt);
int preprocessed_width(const PreprocessOptions& opt);
std::vector<float> preprocess(const Image& src, const PreprocessOptions& opt);

}  // namespace mirad
