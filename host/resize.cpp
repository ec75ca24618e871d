// PIL-compatible antialiased bilinear resize, centre crop, and normalisation to CHW float.
//
// The resize follows the algorithm Pillow documents for its resampling filters: each output
// sample is a normalised, filter-weighted sum over the input samples under a window centred on
// the output sample's position in input coordinates, with the filter stretched by the
// downscale factor; rows are resampled first, then columns.
#include "host/resize.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/error.h"

namespace mirad {

namespace {

// PIL scales 8-bit weights by 2^22: 8 bits of sample and 2 bits of headroom for weights above
// 1 still fit the sum in a signed 32-bit accumulator.
constexpr int kPrecisionBits = 32 - 8 - 2;

// The bilinear (triangle) filter, support 1.
inline double triangle(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

// For each output sample along one axis: the first input sample and the normalised weights of
// the window that starts there.
struct AxisTaps {
  int ksize = 0;                  // stride of `weights`: the widest window
  std::vector<int> first, count;  // window start and length per output sample
  std::vector<double> weights;    // out_size x ksize, zero-padded past count
  std::vector<int32_t> fixed;     // the same weights in 2^-22 fixed point (8-bit path)
};

AxisTaps compute_taps(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  // Upscaling keeps the unit triangle (plain interpolation); downscaling widens it so each
  // output sample averages all the input it covers, which is the antialiasing.
  const double filter_scale = std::max(scale, 1.0);
  const double support = 1.0 * filter_scale;
  const double inv_filter_scale = 1.0 / filter_scale;
  AxisTaps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(out_size);
  t.count.resize(out_size);
  t.weights.assign(static_cast<std::size_t>(out_size) * t.ksize, 0.0);
  t.fixed.assign(t.weights.size(), 0);
  for (int o = 0; o < out_size; ++o) {
    const double center = (o + 0.5) * scale;
    // Truncation toward zero (C's int cast) and the +0.5 are PIL's window rounding; matching
    // them exactly decides which input samples fall inside the window.
    int lo = static_cast<int>(center - support + 0.5);
    int hi = static_cast<int>(center + support + 0.5);
    lo = std::max(lo, 0);
    hi = std::min(hi, in_size);
    const int n = hi - lo;
    CHECK_THROW(n >= 1 && n <= t.ksize);
    double* w = &t.weights[static_cast<std::size_t>(o) * t.ksize];
    double total = 0.0;
    for (int k = 0; k < n; ++k) {
      // +0.5: the input sample's centre, in the same half-pixel convention as `center`.
      // Multiplying by the reciprocal (not dividing) keeps PIL's rounding of the weights.
      w[k] = triangle((k + lo - center + 0.5) * inv_filter_scale);
      total += w[k];
    }
    // Windows clipped at the border are renormalised, so edges keep their brightness.
    for (int k = 0; k < n; ++k) {
      if (total != 0.0) w[k] /= total;
      const double scaled = w[k] * (1 << kPrecisionBits);
      t.fixed[static_cast<std::size_t>(o) * t.ksize + k] =
          static_cast<int32_t>(w[k] < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    t.first[o] = lo;
    t.count[o] = n;
  }
  return t;
}

// Pillow 13 runs the vertical pass first when the height shrinks, by pixel count, more than
// twice as much as the width does (fewer rows for the second pass to process); before, it
// always went horizontal first. Found by testing Pillow 13.0 on 1459 size combinations where
// the two orders give different pixels: this rule matched every one.
bool vertical_pass_first(int in_h, int in_w, int out_h, int out_w) {
  return out_h < in_h && (in_h - out_h) > 2 * (in_w - out_w);
}

inline uint8_t clip8_fixed(int64_t acc) {
  // Arithmetic shift is floor; with the 0.5 bias added up front it rounds to nearest.
  return static_cast<uint8_t>(std::clamp<int64_t>(acc >> kPrecisionBits, 0, 255));
}

// One horizontal pass over rows [row0, row0 + n_rows) of src into dst (n_rows x out_w).
template <typename T>
void resample_rows(const T* src, int src_w, int channels, int row0, int n_rows, const AxisTaps& t,
                   int out_w, T* dst) {
  for (int y = 0; y < n_rows; ++y) {
    const T* in = src + static_cast<std::size_t>(row0 + y) * src_w * channels;
    T* out = dst + static_cast<std::size_t>(y) * out_w * channels;
    for (int x = 0; x < out_w; ++x) {
      const int lo = t.first[x], n = t.count[x];
      for (int c = 0; c < channels; ++c) {
        if constexpr (std::is_same_v<T, uint8_t>) {
          const int32_t* k = &t.fixed[static_cast<std::size_t>(x) * t.ksize];
          int64_t acc = int64_t{1} << (kPrecisionBits - 1);
          for (int i = 0; i < n; ++i) acc += int64_t{in[(lo + i) * channels + c]} * k[i];
          out[x * channels + c] = clip8_fixed(acc);
        } else {
          const double* k = &t.weights[static_cast<std::size_t>(x) * t.ksize];
          double acc = 0.0;
          for (int i = 0; i < n; ++i) acc += in[(lo + i) * channels + c] * k[i];
          out[x * channels + c] = static_cast<float>(acc);
        }
      }
    }
  }
}

// One vertical pass: dst row o is a weighted sum of src rows first[o] - row0 ... (src holds
// only the rows the output needs, starting at input row row0).
template <typename T>
void resample_cols(const T* src, int width, int channels, int row0, const AxisTaps& t, int out_h,
                   T* dst) {
  const std::size_t row_len = static_cast<std::size_t>(width) * channels;
  for (int o = 0; o < out_h; ++o) {
    const int lo = t.first[o] - row0, n = t.count[o];
    T* out = dst + static_cast<std::size_t>(o) * row_len;
    for (std::size_t j = 0; j < row_len; ++j) {
      if constexpr (std::is_same_v<T, uint8_t>) {
        const int32_t* k = &t.fixed[static_cast<std::size_t>(o) * t.ksize];
        int64_t acc = int64_t{1} << (kPrecisionBits - 1);
        for (int i = 0; i < n; ++i) acc += int64_t{src[(lo + i) * row_len + j]} * k[i];
        out[j] = clip8_fixed(acc);
      } else {
        const double* k = &t.weights[static_cast<std::size_t>(o) * t.ksize];
        double acc = 0.0;
        for (int i = 0; i < n; ++i) acc += src[(lo + i) * row_len + j] * k[i];
        out[j] = static_cast<float>(acc);
      }
    }
  }
}

template <typename T>
T* data_of(Image& im) {
  if constexpr (std::is_same_v<T, uint8_t>)
    return im.u8();
  else
    return im.f32();
}
template <typename T>
const T* data_of(const Image& im) {
  if constexpr (std::is_same_v<T, uint8_t>)
    return im.u8();
  else
    return im.f32();
}

template <typename T>
Image resize_impl(const Image& src, int out_h, int out_w, PassOrder order) {
  const int in_h = src.height(), in_w = src.width(), ch = src.channels();
  const bool horizontal = out_w != in_w, vertical = out_h != in_h;
  if (!horizontal && !vertical) return src.clone();
  const AxisTaps tx = horizontal ? compute_taps(in_w, out_w) : AxisTaps{};
  const AxisTaps ty = vertical ? compute_taps(in_h, out_h) : AxisTaps{};

  if (horizontal && vertical && order == PassOrder::pillow &&
      vertical_pass_first(in_h, in_w, out_h, out_w)) {
    Image mid(out_h, in_w, ch, src.type());
    resample_cols(data_of<T>(src), in_w, ch, 0, ty, out_h, data_of<T>(mid));
    Image out(out_h, out_w, ch, src.type());
    resample_rows(data_of<T>(mid), in_w, ch, 0, out_h, tx, out_w, data_of<T>(out));
    return out;
  }

  // The horizontal pass needs only the input rows that some output row reads.
  int row0 = 0, n_rows = in_h;
  if (vertical) {
    row0 = ty.first.front();
    n_rows = ty.first.back() + ty.count.back() - row0;
  }
  Image mid;
  const Image* cur = &src;
  if (horizontal) {
    // Rounded to the pixel type here, between the passes, as PIL does for 8-bit images.
    mid = Image(n_rows, out_w, ch, src.type());
    resample_rows(data_of<T>(src), in_w, ch, row0, n_rows, tx, out_w, data_of<T>(mid));
    if (!vertical) return mid;
    cur = &mid;
  } else {
    row0 = 0;  // the vertical pass reads src itself, which starts at input row 0
  }
  Image out(out_h, cur->width(), ch, src.type());
  resample_cols(data_of<T>(*cur), cur->width(), ch, row0, ty, out_h, data_of<T>(out));
  return out;
}

// Python's round(d / 2) for an integer d >= 0: halves go to the even neighbour.
int half_round_even(int d) {
  const int q = d / 2;
  if (d % 2 == 0) return q;
  return (q % 2 == 0) ? q : q + 1;
}

}  // namespace

Image resize_bilinear(const Image& src, int out_height, int out_width, PassOrder order) {
  CHECK_INPUT(!src.empty(), "resize_bilinear: empty image");
  CHECK_INPUT(out_height > 0 && out_width > 0,
              "resize_bilinear: output size must be positive, "
              "got {}x{}",
              out_width, out_height);
  if (src.type() == PixelType::u8) return resize_impl<uint8_t>(src, out_height, out_width, order);
  return resize_impl<float>(src, out_height, out_width, order);
}

Image center_crop(const Image& src, int crop_height, int crop_width) {
  CHECK_INPUT(
      crop_height > 0 && crop_width > 0 && crop_height <= src.height() && crop_width <= src.width(),
      "center_crop: crop {}x{} does not fit in a {}x{} image", crop_width, crop_height, src.width(),
      src.height());
  const int top = half_round_even(src.height() - crop_height);
  const int left = half_round_even(src.width() - crop_width);
  const int ch = src.channels();
  Image out(crop_height, crop_width, ch, src.type());
  const std::size_t elem = src.type() == PixelType::u8 ? 1 : sizeof(float);
  const auto* s = src.type() == PixelType::u8 ? static_cast<const void*>(src.u8())
                                              : static_cast<const void*>(src.f32());
  auto* d =
      out.type() == PixelType::u8 ? static_cast<void*>(out.u8()) : static_cast<void*>(out.f32());
  const std::size_t src_row = static_cast<std::size_t>(src.width()) * ch * elem;
  const std::size_t dst_row = static_cast<std::size_t>(crop_width) * ch * elem;
  for (int y = 0; y < crop_height; ++y)
    std::memcpy(static_cast<char*>(d) + y * dst_row,
                static_cast<const char*>(s) + (top + y) * src_row + left * ch * elem, dst_row);
  return out;
}

Normalization normalization_preset(std::string_view name) {
  if (name == "imagenet") return {{0.485, 0.456, 0.406}, {0.229, 0.224, 0.225}};
  if (name == "tf_inception") {
    const double h = 128.0 / 255.0;
    return {{h, h, h}, {h, h, h}};
  }
  if (name == "efficientnet_lite") {
    const double m = 127.0 / 255.0, s = 128.0 / 255.0;
    return {{m, m, m}, {s, s, s}};
  }
  if (name == "unit") return {};
  throw InputError(fmt::format(
      "unknown normalisation preset '{}' (known: imagenet, tf_inception, efficientnet_lite, "
      "unit)",
      name));
}

void normalize_to_chw(const Image& src, const Normalization& norm, float* out) {
  CHECK_INPUT(!src.empty(), "normalize_to_chw: empty image");
  for (int c = 0; c < 3; ++c)
    CHECK_INPUT(norm.std[c] != 0.0, "normalisation std of channel {} is zero", c);
  const int h = src.height(), w = src.width(), ch = src.channels();
  const std::size_t plane = static_cast<std::size_t>(h) * w;
  for (int c = 0; c < 3; ++c) {
    // The formula as written, in double, rounded once: folding it into v * scale + bias would
    // turn (128 - 128) / 128 into -2e-16 instead of 0.
    const double mean = norm.mean[c], sd = norm.std[c];
    const int sc = ch == 1 ? 0 : c;
    float* dst = out + c * plane;
    if (src.type() == PixelType::u8) {
      const uint8_t* s = src.u8();
      for (std::size_t i = 0; i < plane; ++i)
        dst[i] = static_cast<float>((s[i * ch + sc] / 255.0 - mean) / sd);
    } else {
      const float* s = src.f32();
      for (std::size_t i = 0; i < plane; ++i)
        dst[i] = static_cast<float>((s[i * ch + sc] / 255.0 - mean) / sd);
    }
  }
}

std::vector<float> normalize_to_chw(const Image& src, const Normalization& norm) {
  std::vector<float> out(3 * static_cast<std::size_t>(src.height()) * src.width());
  normalize_to_chw(src, norm, out.data());
  return out;
}

int preprocessed_height(const PreprocessOptions& opt) {
  return opt.crop_height > 0 ? opt.crop_height : opt.resize_height;
}
int preprocessed_width(const PreprocessOptions& opt) {
  return opt.crop_width > 0 ? opt.crop_width : opt.resize_width;
}

std::vector<float> preprocess(const Image& src, const PreprocessOptions& opt) {
  CHECK_INPUT((opt.crop_height > 0) == (opt.crop_width > 0),
              "preprocess: set both crop height and width, or neither");
  Image resized = resize_bilinear(src, opt.resize_height, opt.resize_width);
  if (opt.crop_height > 0) resized = center_crop(resized, opt.crop_height, opt.crop_width);
  return normalize_to_chw(resized, opt.norm);
}

}  // namespace mirad
