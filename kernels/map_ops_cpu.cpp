// CPU reference of the anomaly-map ops (resize, blur, per-row top-k mean), and the public
// entry points of kernels/map_ops.h, which validate their arguments and then dispatch.
#include <algorithm>
#include <functional>
#include <limits>

#include "core/error.h"
#include "kernels/map_ops.h"

namespace mirad::mapops {

void resize_bilinear_cpu(int64_t n, int64_t h, int64_t w, const float* in, int64_t oh, int64_t ow,
                         float* out) {
  // The column taps are the same for every row and image: compute them once.
  std::vector<LinearTap> cols(ow);
  for (int64_t x = 0; x < ow; ++x) cols[x] = linear_tap(x, w, ow);
  for (int64_t img = 0; img < n; ++img) {
    const float* src = in + img * h * w;
    float* dst = out + img * oh * ow;
    for (int64_t y = 0; y < oh; ++y) {
      const LinearTap r = linear_tap(y, h, oh);
      const float* row0 = src + r.i0 * w;
      const float* row1 = src + r.i1 * w;
      for (int64_t x = 0; x < ow; ++x) {
        const LinearTap& c = cols[x];
        // torch's arrangement: mix along x within each source row, then along y.
        const double top = double(c.l0) * row0[c.i0] + double(c.l1) * row0[c.i1];
        const double bottom = double(c.l0) * row1[c.i0] + double(c.l1) * row1[c.i1];
        dst[y * ow + x] = static_cast<float>(double(r.l0) * top + double(r.l1) * bottom);
      }
    }
  }
}

std::vector<double> gaussian_half_kernel(double sigma) {
  const int64_t radius = gaussian_radius(sigma);
  const double norm = gaussian_norm(radius, sigma);
  std::vector<double> half(radius + 1);
  for (int64_t j = 0; j <= radius; ++j) half[j] = gaussian_phi(j, sigma) / norm;
  return half;
}

namespace {

// One 1-D pass over `count` lines of length `len`, elements `stride` apart, consecutive lines
// `line_step` apart: scipy's symmetric correlate1d (centre tap, then the pairs at distance
// r, r-1, ..., 1), in double, rounded to float once per output.
void gaussian_pass(const std::vector<double>& half, int64_t count, int64_t len, int64_t stride,
                   const std::function<int64_t(int64_t)>& line_base, const float* in, float* out) {
  const int64_t radius = static_cast<int64_t>(half.size()) - 1;
  std::vector<double> line(len);
  for (int64_t l = 0; l < count; ++l) {
    const int64_t base = line_base(l);
    // Copy the line first, so that out may equal in.
    for (int64_t i = 0; i < len; ++i) line[i] = in[base + i * stride];
    for (int64_t i = 0; i < len; ++i) {
      double acc = line[i] * half[0];
      for (int64_t j = radius; j >= 1; --j)
        acc += (line[reflect_index(i - j, len)] + line[reflect_index(i + j, len)]) * half[j];
      out[base + i * stride] = static_cast<float>(acc);
    }
  }
}

}  // namespace

void gaussian_blur_cpu(int64_t n, int64_t h, int64_t w, float sigma, const float* in, float* out) {
  const std::vector<double> half = gaussian_half_kernel(sigma);
  // Vertical (scipy's axis 1 of [n, h, w]) into out, then horizontal in place: the line copy
  // in gaussian_pass makes both safe when out == in.
  gaussian_pass(
      half, n * w, h, w, [&](int64_t l) { return (l / w) * h * w + l % w; }, in, out);
  gaussian_pass(
      half, n * h, w, 1, [&](int64_t l) { return l * w; }, out, out);
}

void row_topk_mean_cpu(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                       float* mean) {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<double> values(cols);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = in + r * cols;
    bool any_pos_inf = false;  // NaN counts as +Inf
    double sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = row[c];
      any_pos_inf = any_pos_inf || std::isnan(v) || v == inf;
      values[c] = v;
      sum += v;
    }
    if (any_pos_inf) {
      // +Inf is in every top k and wins over any -Inf: see the rules in map_ops.h.
      topk_mean[r] = inf;
      mean[r] = inf;
      continue;
    }
    // No NaN here, so the ordering is total and nth_element is exact.
    std::nth_element(values.begin(), values.begin() + (k - 1), values.end(), std::greater<>());
    double top = 0;
    for (int64_t i = 0; i < k; ++i) top += values[i];
    topk_mean[r] = static_cast<float>(top / double(k));
    mean[r] = static_cast<float>(sum / double(cols));
  }
}

void standardize_cpu(int64_t n, const float* in, double median, double iqr, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = standardize_value(in[i], median, iqr);
}

void accumulate_cpu(int64_t n, float w, const float* in, float* acc) {
  for (int64_t i = 0; i < n; ++i) acc[i] = weighted_add(acc[i], w, in[i]);
}

namespace {

constexpr int64_t kMaxIndex = std::numeric_limits<int64_t>::max();

// a*b*c as a flat 64-bit element count, refusing sizes where it would wrap.
int64_t checked_count(const char* what, int64_t a, int64_t b, int64_t c) {
  CHECK_INPUT(a >= 0 && b >= 0 && c >= 0, "mapops::{}: negative size ({} x {} x {})", what, a, b,
              c);
  if (a == 0 || b == 0 || c == 0) return 0;
  CHECK_INPUT(a <= kMaxIndex / b && a * b <= kMaxIndex / c / int64_t(sizeof(float)),
              "mapops::{}: {} x {} x {} floats overflow a 64-bit index", what, a, b, c);
  return a * b * c;
}

void check_backend(const char* what, Device d) {
#ifndef MIRAD_HAVE_CUDA
  CHECK_INPUT(d == Device::cpu,
              "mapops::{}: device 'cuda' requested but this build has no CUDA backend", what);
#else
  (void)what;
  (void)d;
#endif
}

// [a, a + a_count) and [b, b + b_count) floats share memory.
bool overlaps(const float* a, int64_t a_count, const float* b, int64_t b_count) {
  return std::less<>()(a, b + b_count) && std::less<>()(b, a + a_count);
}

}  // namespace

void resize_bilinear(int64_t n, int64_t h, int64_t w, const float* in, int64_t oh, int64_t ow,
                     float* out, Device d, Stream s) {
  const int64_t in_count = checked_count("resize_bilinear", n, h, w);
  const int64_t out_count = checked_count("resize_bilinear", n, oh, ow);
  CHECK_INPUT(h > 0 && w > 0 && oh > 0 && ow > 0,
              "mapops::resize_bilinear: empty map size ({} x {} -> {} x {})", h, w, oh, ow);
  check_backend("resize_bilinear", d);
  if (n == 0) return;
  CHECK_INPUT(in != nullptr && out != nullptr, "mapops::resize_bilinear: null map pointer");
  CHECK_INPUT(!overlaps(in, in_count, out, out_count),
              "mapops::resize_bilinear: input and output overlap");
  if (d == Device::cpu) return resize_bilinear_cpu(n, h, w, in, oh, ow, out);
#ifdef MIRAD_HAVE_CUDA
  resize_bilinear_cuda(n, h, w, in, oh, ow, out, s);
#else
  (void)s;
#endif
}

void gaussian_blur(int64_t n, int64_t h, int64_t w, float sigma, const float* in, float* out,
                   Device d, Stream s) {
  const int64_t count = checked_count("gaussian_blur", n, h, w);
  CHECK_INPUT(h > 0 && w > 0, "mapops::gaussian_blur: empty map size ({} x {})", h, w);
  CHECK_INPUT(std::isfinite(sigma) && sigma > 0,
              "mapops::gaussian_blur: sigma must be positive and finite (got {})", sigma);
  CHECK_INPUT(gaussian_radius(sigma) <= (int64_t(1) << 20),
              "mapops::gaussian_blur: sigma {} gives a kernel radius above 2^20", sigma);
  check_backend("gaussian_blur", d);
  if (n == 0) return;
  CHECK_INPUT(in != nullptr && out != nullptr, "mapops::gaussian_blur: null map pointer");
  // In place is fine; a partial overlap would read half-blurred input.
  CHECK_INPUT(in == out || !overlaps(in, count, out, count),
              "mapops::gaussian_blur: input and output partially overlap");
  if (d == Device::cpu) return gaussian_blur_cpu(n, h, w, sigma, in, out);
#ifdef MIRAD_HAVE_CUDA
  gaussian_blur_cuda(n, h, w, sigma, in, out, s);
#else
  (void)s;
#endif
}

void row_topk_mean(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                   float* mean, Device d, Stream s) {
  const int64_t count = checked_count("row_topk_mean", rows, cols, 1);
  CHECK_INPUT(cols > 0, "mapops::row_topk_mean: rows must have at least one column (got {})", cols);
  CHECK_INPUT(k >= 1 && k <= cols, "mapops::row_topk_mean: k = {} is not in [1, cols = {}]", k,
              cols);
  if (d == Device::cuda)
    CHECK_INPUT(cols <= std::numeric_limits<int32_t>::max(),
                "mapops::row_topk_mean: the CUDA backend takes rows of fewer than 2^31 columns "
                "(got {})",
                cols);
  check_backend("row_topk_mean", d);
  if (rows == 0) return;
  CHECK_INPUT(in != nullptr && topk_mean != nullptr && mean != nullptr,
              "mapops::row_topk_mean: null pointer");
  CHECK_INPUT(!overlaps(in, count, topk_mean, rows) && !overlaps(in, count, mean, rows) &&
                  !overlaps(topk_mean, rows, mean, rows),
              "mapops::row_topk_mean: input and outputs must not overlap");
  if (d == Device::cpu) return row_topk_mean_cpu(rows, cols, k, in, topk_mean, mean);
#ifdef MIRAD_HAVE_CUDA
  row_topk_mean_cuda(rows, cols, k, in, topk_mean, mean, s);
#else
  (void)s;
#endif
}

void standardize(int64_t n, const float* in, double median, double iqr, float* out, Device d,
                 Stream s) {
  CHECK_INPUT(n >= 0, "mapops::standardize: negative size {}", n);
  CHECK_INPUT(std::isfinite(median) && std::isfinite(iqr) && iqr > 0,
              "mapops::standardize: median {} and IQR {} must be finite, the IQR positive",
              median, iqr);
  check_backend("standardize", d);
  if (n == 0) return;
  CHECK_INPUT(in != nullptr && out != nullptr, "mapops::standardize: null pointer");
  CHECK_INPUT(in == out || !overlaps(in, n, out, n),
              "mapops::standardize: input and output partially overlap");
  if (d == Device::cpu) return standardize_cpu(n, in, median, iqr, out);
#ifdef MIRAD_HAVE_CUDA
  standardize_cuda(n, in, median, iqr, out, s);
#else
  (void)s;
#endif
}

void accumulate(int64_t n, float w, const float* in, float* acc, Device d, Stream s) {
  CHECK_INPUT(n >= 0, "mapops::accumulate: negative size {}", n);
  check_backend("accumulate", d);
  if (n == 0) return;
  CHECK_INPUT(in != nullptr && acc != nullptr, "mapops::accumulate: null pointer");
  CHECK_INPUT(!overlaps(in, n, acc, n), "mapops::accumulate: input and sum overlap");
  if (d == Device::cpu) return accumulate_cpu(n, w, in, acc);
#ifdef MIRAD_HAVE_CUDA
  accumulate_cuda(n, w, in, acc, s);
#else
  (void)s;
#endif
}

}  // namespace mirad::mapops
