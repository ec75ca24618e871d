// CPU tests of the anomaly-map ops (kernels/map_ops.h): bilinear resize against torch's known
// outputs and a float64 re-implementation, Gaussian blur against scipy's rules and a direct 2-D
// convolution in double, and the per-row top-k mean with its tie and non-finite rules.
// Suite names start with 'map_ops' so that `ctest -R map_ops` selects them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "expect_error.h"
#include "kernels/map_ops.h"

namespace mirad {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_maps(int64_t count, uint64_t seed, float lo = -1, float hi = 3) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(count);
  for (float& x : v) x = dist(rng);
  return v;
}

// ---- resize ----

std::vector<float> resize(const std::vector<float>& in, int64_t n, int64_t h, int64_t w, int64_t oh,
                          int64_t ow) {
  std::vector<float> out(n * oh * ow, -123.f);
  mapops::resize_bilinear(n, h, w, in.data(), oh, ow, out.data(), Device::cpu);
  return out;
}

TEST(map_ops, ResizeUpsample2x2To4x4MatchesTorch) {
  // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
  // mode="bilinear", align_corners=False):
  const std::vector<float> want = {1.0f, 1.25f, 1.75f, 2.0f, 1.5f, 1.75f, 2.25f, 2.5f,
                                   2.5f, 2.75f, 3.25f, 3.5f, 3.0f, 3.25f, 3.75f, 4.0f};
  EXPECT_EQ(resize({1, 2, 3, 4}, 1, 2, 2, 4, 4), want);
}

TEST(map_ops, ResizeDownsample4x4To2x2MatchesTorch) {
  // torch: interpolate(arange(16).view(1, 1, 4, 4), size=(2, 2), bilinear, align_corners=False)
  // = [[2.5, 4.5], [10.5, 12.5]]: each output sits between four inputs (no antialiasing).
  std::vector<float> in(16);
  std::iota(in.begin(), in.end(), 0.f);
  EXPECT_EQ(resize(in, 1, 4, 4, 2, 2), (std::vector<float>{2.5f, 4.5f, 10.5f, 12.5f}));
}

TEST(map_ops, ResizeNonIntegerScalesByHand) {
  // 1 x 3 -> 1 x 2 along x (scale 1.5): sources 0.25 and 1.75, so
  // [0.75 a + 0.25 b, 0.25 b + 0.75 c]. Rows: 1 -> 1 is the identity.
  EXPECT_EQ(resize({4, 8, 16}, 1, 1, 3, 1, 2), (std::vector<float>{5.f, 14.f}));
  // 1 x 2 -> 1 x 5 (scale 0.4): sources clamp(-0.3) = 0, 0.1, 0.5, 0.9, 1.3 -> clamps i1.
  const auto up = resize({0, 10}, 1, 1, 2, 1, 5);
  const float want[5] = {0.f, 1.f, 5.f, 9.f, 10.f};
  for (int i = 0; i < 5; ++i) EXPECT_NEAR(up[i], want[i], 2e-6f) << i;
  // A single output pixel of a 4 x 4 map sits at source (1.5, 1.5).
  std::vector<float> in(16);
  std::iota(in.begin(), in.end(), 0.f);
  EXPECT_EQ(resize(in, 1, 4, 4, 1, 1), (std::vector<float>{7.5f}));
}

// torch's rule written out independently of linear_tap: the source coordinate in float, as
// torch computes it (float scale, then one fused multiply-add: on a 630-px map an ulp of the
// coordinate is ~1.5e-5 px, which moves values by more than a float ulp, so exact or
// separately rounded coordinates would not be torch's), then the mixing in double.
double torch_bilinear(const float* img, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t y,
                      int64_t x) {
  auto source = [](int64_t dst, int64_t in, int64_t out, int64_t& i0, int64_t& i1, double& l1) {
    const float scale = float(in) / float(out);
    float s = std::fma(scale, float(dst) + 0.5f, -0.5f);
    if (s < 0) s = 0;
    i0 = int64_t(std::floor(s));
    i1 = std::min(i0 + 1, in - 1);
    l1 = double(s - float(i0));
  };
  int64_t y0, y1, x0, x1;
  double ly, lx;
  source(y, h, oh, y0, y1, ly);
  source(x, w, ow, x0, x1, lx);
  auto at = [&](int64_t yy, int64_t xx) { return double(img[yy * w + xx]); };
  return (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
         ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
}

TEST(map_ops, ResizeMatchesFloat64ReferenceOnOddSizes) {
  struct Case {
    int64_t n, h, w, oh, ow;
  };
  for (const Case& c : {Case{2, 7, 13, 29, 5}, Case{1, 28, 28, 256, 256}, Case{3, 31, 17, 9, 40},
                        Case{1, 1, 1, 3, 7}, Case{2, 5, 1, 5, 3}, Case{1, 64, 172, 230, 630}}) {
    const auto in = random_maps(c.n * c.h * c.w, 11 + c.h);
    const auto out = resize(in, c.n, c.h, c.w, c.oh, c.ow);
    double worst = 0;
    for (int64_t i = 0; i < c.n; ++i)
      for (int64_t y = 0; y < c.oh; ++y)
        for (int64_t x = 0; x < c.ow; ++x) {
          const double want = torch_bilinear(in.data() + i * c.h * c.w, c.h, c.w, c.oh, c.ow, y, x);
          worst = std::max(worst, std::abs(out[(i * c.oh + y) * c.ow + x] - want));
        }
    // Both mix in double; the float weights 1 - l1 are rounded the same way: ~1e-7 of 3.
    EXPECT_LT(worst, 1e-6) << c.h << "x" << c.w << " -> " << c.oh << "x" << c.ow;
  }
}

TEST(map_ops, ResizeToSameSizeIsIdentity) {
  const auto in = random_maps(3 * 11 * 7, 5);
  EXPECT_EQ(resize(in, 3, 11, 7, 11, 7), in);
}

// ---- Gaussian blur ----

std::vector<float> blur(const std::vector<float>& in, int64_t n, int64_t h, int64_t w,
                        float sigma) {
  std::vector<float> out(in.size(), -123.f);
  mapops::gaussian_blur(n, h, w, sigma, in.data(), out.data(), Device::cpu);
  return out;
}

// scipy's reflect, written out as an explicit mirror walk (independent of reflect_index).
int64_t mirror_walk(int64_t i, int64_t n) {
  while (i < 0 || i >= n) {
    if (i < 0) i = -i - 1;
    if (i >= n) i = 2 * n - 1 - i;
  }
  return i;
}

// Direct 2-D correlation with the outer-product kernel, all in double.
std::vector<double> blur_2d_reference(const std::vector<float>& in, int64_t n, int64_t h, int64_t w,
                                      double sigma) {
  const int64_t r = int64_t(4 * sigma + 0.5);
  std::vector<double> k(2 * r + 1);
  double norm = 0;
  for (int64_t j = -r; j <= r; ++j)
    norm += k[j + r] = std::exp(-double(j * j) / (2 * sigma * sigma));
  for (double& v : k) v /= norm;
  std::vector<double> out(in.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        double acc = 0;
        for (int64_t dy = -r; dy <= r; ++dy)
          for (int64_t dx = -r; dx <= r; ++dx)
            acc += k[dy + r] * k[dx + r] *
                   in[(i * h + mirror_walk(y + dy, h)) * w + mirror_walk(x + dx, w)];
        out[(i * h + y) * w + x] = acc;
      }
  return out;
}

TEST(map_ops, GaussianKernelFollowsScipy) {
  // scipy: radius = int(4 * sigma + 0.5): 4 -> 16, 1.1 -> 4 (ceil would give 5), 0.1 -> 0.
  EXPECT_EQ(mapops::gaussian_half_kernel(4.0).size(), 17u);
  EXPECT_EQ(mapops::gaussian_half_kernel(1.1).size(), 5u);
  EXPECT_EQ(mapops::gaussian_half_kernel(0.1).size(), 1u);
  // sigma = 1: radius 4, w[j] = exp(-j^2/2) / sum_{-4..4} exp(-j^2/2); sum = 2.50662080...
  const auto k = mapops::gaussian_half_kernel(1.0);
  ASSERT_EQ(k.size(), 5u);
  const double norm = 1 + 2 * (std::exp(-0.5) + std::exp(-2.0) + std::exp(-4.5) + std::exp(-8.0));
  EXPECT_NEAR(norm, 2.506620804230782, 1e-14);
  for (int j = 0; j < 5; ++j) EXPECT_NEAR(k[j], std::exp(-0.5 * j * j) / norm, 1e-16) << j;
  EXPECT_NEAR(k[0], 0.39894346935609776, 1e-15);  // scipy's _gaussian_kernel1d(1, 0, 4)[4]
}

TEST(map_ops, BlurKeepsConstantMapsConstant) {
  // Every output is a normalised average of reflected copies, so a constant stays constant,
  // also with a radius (16) far past a 3 x 5 map.
  for (float sigma : {0.6f, 2.f, 4.f}) {
    const std::vector<float> in(2 * 3 * 5, 2.5f);
    for (float v : blur(in, 2, 3, 5, sigma)) ASSERT_NEAR(v, 2.5f, 2e-6f) << sigma;
  }
}

TEST(map_ops, BlurPreservesMassInTheInterior) {
  // An impulse further than the radius from every border: nothing reflects, so the output sums
  // to the impulse and the profile is the outer product of the 1-D kernel.
  const int64_t h = 41, w = 37;
  const float sigma = 2.f;  // radius 8
  std::vector<float> in(h * w, 0.f);
  in[20 * w + 18] = 100.f;
  const auto out = blur(in, 1, h, w, sigma);
  const double mass = std::accumulate(out.begin(), out.end(), 0.0);
  EXPECT_NEAR(mass, 100.0, 1e-4);
  const auto k = mapops::gaussian_half_kernel(sigma);
  EXPECT_NEAR(out[20 * w + 18], 100 * k[0] * k[0], 1e-5);
  EXPECT_NEAR(out[23 * w + 16], 100 * k[3] * k[2], 1e-5);
  EXPECT_EQ(out[20 * w + 18 + 9], 0.f);  // just outside the radius
  EXPECT_EQ(out[(20 - 9) * w + 18], 0.f);
}

TEST(map_ops, BlurReflectsAboutTheEdge) {
  // 1 x 3 row, sigma 0.5 (radius 2): reflect extends [a b c] as (b a | a b c | c b).
  const auto k = mapops::gaussian_half_kernel(0.5);
  ASSERT_EQ(k.size(), 3u);
  const double a = 1, b = 10, c = 100;
  // Vertical pass on a height-1 map: every tap reflects to row 0, so it is the identity
  // up to the normalisation (sum of taps = 1).
  const auto out = blur({float(a), float(b), float(c)}, 1, 1, 3, 0.5f);
  EXPECT_NEAR(out[0], k[0] * a + k[1] * (a + b) + k[2] * (b + c), 1e-4);
  EXPECT_NEAR(out[1], k[0] * b + k[1] * (a + c) + k[2] * (a + c), 1e-4);
  EXPECT_NEAR(out[2], k[0] * c + k[1] * (b + c) + k[2] * (a + b), 1e-4);
}

TEST(map_ops, BlurMatchesDirect2dConvolution) {
  struct Case {
    int64_t n, h, w;
    float sigma;
  };
  // Odd sizes, radius below and above the map size (1 x 1 and 2 x 9 reflect repeatedly).
  for (const Case& c : {Case{2, 13, 17, 1.3f}, Case{1, 32, 20, 4.f}, Case{3, 2, 9, 3.f},
                        Case{1, 1, 1, 2.f}, Case{1, 7, 1, 0.8f}, Case{1, 5, 6, 0.1f}}) {
    const auto in = random_maps(c.n * c.h * c.w, 21 + c.w);
    const auto out = blur(in, c.n, c.h, c.w, c.sigma);
    const auto want = blur_2d_reference(in, c.n, c.h, c.w, c.sigma);
    double worst = 0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(out[i] - want[i]));
    // The separable version rounds its intermediate to float: ~1 ulp of values up to 3.
    EXPECT_LT(worst, 1e-6) << c.h << "x" << c.w << " sigma " << c.sigma;
  }
}

TEST(map_ops, BlurInPlaceEqualsOutOfPlace) {
  auto in = random_maps(2 * 19 * 23, 3);
  const auto want = blur(in, 2, 19, 23, 2.5f);
  mapops::gaussian_blur(2, 19, 23, 2.5f, in.data(), in.data(), Device::cpu);
  EXPECT_EQ(in, want);
}

// ---- row top-k mean ----

struct RowStats {
  std::vector<float> topk, mean;
};
RowStats topk_mean(const std::vector<float>& in, int64_t rows, int64_t cols, int64_t k) {
  RowStats s{std::vector<float>(rows, -123.f), std::vector<float>(rows, -123.f)};
  mapops::row_topk_mean(rows, cols, k, in.data(), s.topk.data(), s.mean.data(), Device::cpu);
  return s;
}

TEST(map_ops, TopkHandComputed) {
  // Row 0: ties at the k-th value; row 1: k = cols; row 2: negatives, -0.
  const std::vector<float> in = {3,  1,    5,  5,  2,  5,  //
                                 1,  2,    3,  4,  5,  6,  //
                                 -1, -0.f, -7, -2, -3, -4};
  auto s = topk_mean(in, 3, 6, 2);
  EXPECT_EQ(s.topk[0], 5.f);
  EXPECT_EQ(s.topk[1], 5.5f);
  EXPECT_EQ(s.topk[2], -0.5f);
  EXPECT_FLOAT_EQ(s.mean[0], 21.f / 6);
  EXPECT_EQ(s.mean[1], 3.5f);
  EXPECT_FLOAT_EQ(s.mean[2], -17.f / 6);
  s = topk_mean(in, 3, 6, 4);  // row 0: 5, 5, 5, 3
  EXPECT_EQ(s.topk[0], 4.5f);
  s = topk_mean(in, 3, 6, 1);
  EXPECT_EQ(s.topk, (std::vector<float>{5, 6, 0}));
  s = topk_mean(in, 3, 6, 6);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(s.topk[r], s.mean[r]) << r;
}

TEST(map_ops, TopkNonFiniteRules) {
  const std::vector<float> in = {
      1,     kNan,  3,     4,  // NaN counts as +Inf
      1,     kInf,  3,     4,  // +Inf
      -kInf, kInf,  0,     1,  // +Inf wins over -Inf: never NaN
      -kInf, 2,     3,     4,  // -Inf outside the top 2: finite top-k, -Inf mean
      -kInf, -kInf, -kInf, 5,  // -Inf inside the top 2
      kNan,  kNan,  kNan,  kNan,
  };
  const auto s = topk_mean(in, 6, 4, 2);
  const std::vector<float> want_topk = {kInf, kInf, kInf, 3.5f, -kInf, kInf};
  const std::vector<float> want_mean = {kInf, kInf, kInf, -kInf, -kInf, kInf};
  EXPECT_EQ(s.topk, want_topk);
  EXPECT_EQ(s.mean, want_mean);
  const auto all = topk_mean(in, 6, 4, 4);
  EXPECT_EQ(all.topk, want_mean);  // k == cols: the same as the mean, row by row
}

TEST(map_ops, TopkMatchesSortReference) {
  std::mt19937_64 rng(99);
  for (int64_t cols : {1, 2, 7, 100, 1001, 4099}) {
    const int64_t rows = 5;
    // Few distinct values so ties at the cut are common.
    std::uniform_int_distribution<int> level(-20, 20);
    std::vector<float> in(rows * cols);
    for (float& v : in) v = level(rng) * 0.25f;
    for (int64_t k : {int64_t(1), (cols + 1) / 2, std::max<int64_t>(1, cols / 100), cols}) {
      const auto s = topk_mean(in, rows, cols, k);
      for (int64_t r = 0; r < rows; ++r) {
        std::vector<double> row(in.begin() + r * cols, in.begin() + (r + 1) * cols);
        std::sort(row.begin(), row.end(), std::greater<>());
        const double top = std::accumulate(row.begin(), row.begin() + k, 0.0) / double(k);
        const double mean = std::accumulate(row.begin(), row.end(), 0.0) / double(cols);
        EXPECT_EQ(s.topk[r], float(top)) << cols << " " << k << " " << r;
        EXPECT_EQ(s.mean[r], float(mean)) << cols << " " << r;
      }
    }
  }
}

TEST(map_ops, ZeroRowsOrMapsAreNoOps) {
  float* none = nullptr;
  mapops::row_topk_mean(0, 5, 2, none, none, none, Device::cpu);
  mapops::gaussian_blur(0, 4, 4, 1.f, none, none, Device::cpu);
  mapops::resize_bilinear(0, 4, 4, none, 8, 8, none, Device::cpu);
}

TEST(map_ops, BadArgumentsRejected) {
  std::vector<float> a(64, 1.f), b(64, 0.f), c(8, 0.f);
  using test::expect_input_error;
  expect_input_error(
      [&] { mapops::resize_bilinear(1, 0, 4, a.data(), 4, 4, b.data(), Device::cpu); }, "empty");
  expect_input_error(
      [&] { mapops::resize_bilinear(-1, 4, 4, a.data(), 4, 4, b.data(), Device::cpu); },
      "negative");
  expect_input_error(
      [&] { mapops::resize_bilinear(1, 4, 4, a.data(), 4, 4, a.data() + 8, Device::cpu); },
      "overlap");
  expect_input_error(
      [&] { mapops::resize_bilinear(1, 4, 4, nullptr, 4, 4, b.data(), Device::cpu); }, "null");
  expect_input_error(
      [&] {
        mapops::resize_bilinear(int64_t(1) << 40, int64_t(1) << 20, 16, a.data(), 4, 4, b.data(),
                                Device::cpu);
      },
      "overflow");
  for (float sigma : {0.f, -1.f, kNan, kInf})
    expect_input_error(
        [&] { mapops::gaussian_blur(1, 4, 4, sigma, a.data(), b.data(), Device::cpu); }, "sigma");
  expect_input_error([&] { mapops::gaussian_blur(1, 4, 4, 1e9f, a.data(), b.data(), Device::cpu); },
                     "radius");
  expect_input_error(
      [&] { mapops::gaussian_blur(1, 4, 4, 1.f, a.data(), a.data() + 1, Device::cpu); }, "overlap");
  for (int64_t k : {0, -1, 9})
    expect_input_error(
        [&] { mapops::row_topk_mean(8, 8, k, a.data(), c.data(), b.data(), Device::cpu); },
        "not in [1, cols");
  expect_input_error(
      [&] { mapops::row_topk_mean(8, 0, 1, a.data(), c.data(), b.data(), Device::cpu); },
      "at least one column");
  expect_input_error(
      [&] { mapops::row_topk_mean(8, 8, 1, a.data(), a.data() + 3, b.data(), Device::cpu); },
      "overlap");
  expect_input_error(
      [&] { mapops::row_topk_mean(8, 8, 1, a.data(), nullptr, b.data(), Device::cpu); }, "null");
  if (!cuda_compiled())
    expect_input_error(
        [&] { mapops::gaussian_blur(1, 4, 4, 1.f, a.data(), b.data(), Device::cuda); }, "no CUDA");
}

}  // namespace
}  // namespace mirad

TEST(map_ops, StandardizeAndAccumulateByHand) {
  using namespace mirad;
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> in = {1, 5, -3, std::nanf(""), inf, -inf};
  std::vector<float> out(in.size());
  // median 1, IQR 2: (x - 1) / 2; NaN becomes +Inf, +-Inf stay.
  mapops::standardize(int64_t(in.size()), in.data(), 1.0, 2.0, out.data(), Device::cpu);
  const std::vector<float> want = {0, 2, -2, inf, inf, -inf};
  EXPECT_EQ(out, want);
  // In place is allowed.
  std::vector<float> same = in;
  mapops::standardize(int64_t(in.size()), same.data(), 1.0, 2.0, same.data(), Device::cpu);
  EXPECT_EQ(same, want);
  // acc += 0.5 * x, each step rounded to float: 0.1f + 0.5f * 0.3f exactly as two roundings.
  std::vector<float> acc = {0.1f, 1.f, 2.f};
  const std::vector<float> x = {0.3f, -4.f, 0.f};
  mapops::accumulate(3, 0.5f, x.data(), acc.data(), Device::cpu);
  const float p0 = 0.5f * 0.3f;
  EXPECT_EQ(acc[0], 0.1f + p0);
  EXPECT_EQ(acc[1], -1.f);
  EXPECT_EQ(acc[2], 2.f);
  mirad::test::expect_input_error(
      [&] { mapops::standardize(3, in.data(), 0.0, 0.0, out.data(), Device::cpu); },
      "must be finite, the IQR positive");
  mirad::test::expect_input_error(
      [&] { mapops::accumulate(3, 1.f, acc.data(), acc.data() + 1, Device::cpu); }, "overlap");
}
