// CUDA anomaly-map ops against the CPU reference: resize, blur and row top-k mean on random
// inputs of odd sizes, with sentinel regions around every output to catch out-of-bounds writes.
// Suite names start with 'cuda_map_ops' so that `ctest -R map_ops` selects them.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "cuda_diff.h"
#include "kernels/map_ops.h"

namespace mirad {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

// n floats on the device inside sentinel padding (tests/cuda_diff.h).
using Guarded = test::Guarded<float, 129>;

std::vector<float> random_maps(int64_t count, uint64_t seed) {
  return test::uniform_values(count, seed, -1.f, 3.f);
}

// |cuda - cpu| <= tol * scale for every entry (NaN/Inf must match exactly).
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol,
                  double scale, const std::string& what) {
  test::expect_each_close(got, want, [&](size_t) { return tol * scale; }, what, true);
}

// ---- resize ----

struct ResizeCase {
  int64_t n, h, w, oh, ow;
};

class cuda_map_ops_resize : public ::testing::TestWithParam<ResizeCase> {};

TEST_P(cuda_map_ops_resize, MatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const auto [n, h, w, oh, ow] = GetParam();
  const auto in = random_maps(n * h * w, 17 + h * w);
  std::vector<float> want(n * oh * ow);
  mapops::resize_bilinear(n, h, w, in.data(), oh, ow, want.data(), Device::cpu);
  Guarded d_in(in), d_out(n * oh * ow);
  mapops::resize_bilinear(n, h, w, d_in.data(), oh, ow, d_out.data(), Device::cuda);
  // Same float weights; the CPU mixes in double, CUDA in float: a few ulp of values <= 3.
  expect_close(d_out.body("resize"), want, 1e-6, 3.0, "resize");
  EXPECT_EQ(d_in.body("resize input"), in);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, cuda_map_ops_resize,
                         ::testing::Values(ResizeCase{2, 7, 13, 29, 5}, ResizeCase{1, 2, 2, 4, 4},
                                           ResizeCase{3, 28, 28, 256, 256},
                                           ResizeCase{1, 1, 1, 3, 7}, ResizeCase{5, 31, 17, 9, 40},
                                           ResizeCase{1, 64, 172, 230, 630},
                                           ResizeCase{2, 33, 33, 1, 1}),
                         [](const auto& info) {
                           const ResizeCase& c = info.param;
                           return std::to_string(c.n) + "x" + std::to_string(c.h) + "x" +
                                  std::to_string(c.w) + "_to_" + std::to_string(c.oh) + "x" +
                                  std::to_string(c.ow);
                         });

TEST(cuda_map_ops_api, ResizeHandValues) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  Guarded in(std::vector<float>{1, 2, 3, 4}), out(16);
  mapops::resize_bilinear(1, 2, 2, in.data(), 4, 4, out.data(), Device::cuda);
  EXPECT_EQ(out.body("2x2->4x4"),
            (std::vector<float>{1.0f, 1.25f, 1.75f, 2.0f, 1.5f, 1.75f, 2.25f, 2.5f, 2.5f, 2.75f,
                                3.25f, 3.5f, 3.0f, 3.25f, 3.75f, 4.0f}));
}

// ---- Gaussian blur ----

struct BlurCase {
  int64_t n, h, w;
  float sigma;
};

class cuda_map_ops_blur : public ::testing::TestWithParam<BlurCase> {};

TEST_P(cuda_map_ops_blur, MatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const auto [n, h, w, sigma] = GetParam();
  const auto in = random_maps(n * h * w, 23 + h + w);
  std::vector<float> want(in.size());
  mapops::gaussian_blur(n, h, w, sigma, in.data(), want.data(), Device::cpu);
  Guarded d_in(in), d_out(n * h * w);
  mapops::gaussian_blur(n, h, w, sigma, d_in.data(), d_out.data(), Device::cuda);
  // Float accumulation over 2r+1 taps of weights summing to 1, twice: within 2e-6 of the
  // largest |input| (3 here), as documented in map_ops.h.
  expect_close(d_out.body("blur"), want, 2e-6, 3.0, "blur");
  EXPECT_EQ(d_in.body("blur input"), in);
  // In place gives the same result.
  mapops::gaussian_blur(n, h, w, sigma, d_in.data(), d_in.data(), Device::cuda);
  expect_close(d_in.body("blur in place"), want, 2e-6, 3.0, "blur in place");
}

INSTANTIATE_TEST_SUITE_P(
    OddSizes, cuda_map_ops_blur,
    // Radius below and far above the map size (1 x 1, 2 x 9 and 3 x 200 reflect repeatedly).
    ::testing::Values(BlurCase{2, 13, 17, 1.3f}, BlurCase{1, 256, 256, 4.f}, BlurCase{3, 2, 9, 3.f},
                      BlurCase{1, 1, 1, 2.f}, BlurCase{1, 7, 1, 0.8f}, BlurCase{1, 5, 6, 0.1f},
                      BlurCase{4, 230, 630, 9.8f}, BlurCase{2, 3, 200, 16.f}),
    [](const auto& info) {
      const BlurCase& c = info.param;
      return std::to_string(c.n) + "x" + std::to_string(c.h) + "x" + std::to_string(c.w) +
             "_sigma" + std::to_string(int(c.sigma * 10));
    });

// ---- row top-k mean ----

struct TopkCase {
  int64_t rows, cols, k;
  int levels;  // > 0: values on a grid of this many levels, so ties are common
};

class cuda_map_ops_topk : public ::testing::TestWithParam<TopkCase> {};

TEST_P(cuda_map_ops_topk, MatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const auto [rows, cols, k, levels] = GetParam();
  std::mt19937_64 rng(rows * 1000 + cols);
  std::vector<float> in(rows * cols);
  if (levels > 0) {
    std::uniform_int_distribution<int> level(-levels / 2, levels / 2);
    for (float& v : in) v = level(rng) * 0.125f;
  } else {
    // Scores of either sign and several magnitudes, and some -0.
    std::normal_distribution<float> dist(0.f, 1.f);
    std::uniform_int_distribution<int> exponent(-10, 10);
    for (float& v : in) v = std::ldexp(dist(rng), exponent(rng));
    for (int64_t i = 0; i < int64_t(in.size()); i += 37) in[i] = -0.f;
  }
  std::vector<float> want_topk(rows), want_mean(rows);
  mapops::row_topk_mean(rows, cols, k, in.data(), want_topk.data(), want_mean.data(), Device::cpu);
  Guarded d_in(in), d_topk(rows), d_mean(rows);
  mapops::row_topk_mean(rows, cols, k, d_in.data(), d_topk.data(), d_mean.data(), Device::cuda);
  const auto got_topk = d_topk.body("topk"), got_mean = d_mean.body("mean");
  // Both sides sum in double (different orders) and round once: equal up to the float rounding
  // of a double-rounding difference.
  for (int64_t r = 0; r < rows; ++r) {
    EXPECT_NEAR(got_topk[r], want_topk[r], 1e-6 * (1 + std::abs(want_topk[r]))) << "row " << r;
    EXPECT_NEAR(got_mean[r], want_mean[r], 1e-6 * (1 + std::abs(want_mean[r]))) << "row " << r;
  }
  // Deterministic: a second run is bit-identical.
  Guarded d_topk2(rows), d_mean2(rows);
  mapops::row_topk_mean(rows, cols, k, d_in.data(), d_topk2.data(), d_mean2.data(), Device::cuda);
  EXPECT_EQ(d_topk2.body("topk again"), got_topk);
  EXPECT_EQ(d_mean2.body("mean again"), got_mean);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, cuda_map_ops_topk,
                         ::testing::Values(TopkCase{1, 1, 1, 0}, TopkCase{3, 7, 1, 4},
                                           TopkCase{3, 7, 7, 4}, TopkCase{5, 33, 16, 6},
                                           TopkCase{4, 1000, 10, 0}, TopkCase{4, 1000, 10, 3},
                                           TopkCase{7, 4099, 41, 0}, TopkCase{7, 4099, 4099, 0},
                                           TopkCase{2, 100003, 1000, 0},
                                           TopkCase{2, 100003, 1000, 9}, TopkCase{300, 257, 3, 0},
                                           TopkCase{2, 65536, 655, 1}),
                         [](const auto& info) {
                           const TopkCase& c = info.param;
                           return std::to_string(c.rows) + "x" + std::to_string(c.cols) + "_k" +
                                  std::to_string(c.k) + "_levels" + std::to_string(c.levels);
                         });

TEST(cuda_map_ops_api, TopkNonFiniteRulesMatchCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const std::vector<float> in = {
      1,     kNan,  3,     4,     // NaN counts as +Inf
      1,     kInf,  3,     4,     // +Inf
      -kInf, kInf,  0,     1,     // +Inf wins over -Inf
      -kInf, 2,     3,     4,     // -Inf outside the top 2
      -kInf, -kInf, -kInf, 5,     // -Inf inside the top 2
      kNan,  kNan,  kNan,  kNan,  //
      -0.f,  0.f,   -0.f,  -0.f,  // signed zeros tie at the cut
  };
  const int64_t rows = 7, cols = 4;
  for (int64_t k : {1, 2, 4}) {
    std::vector<float> want_topk(rows), want_mean(rows);
    mapops::row_topk_mean(rows, cols, k, in.data(), want_topk.data(), want_mean.data(),
                          Device::cpu);
    Guarded d_in(in), d_topk(rows), d_mean(rows);
    mapops::row_topk_mean(rows, cols, k, d_in.data(), d_topk.data(), d_mean.data(), Device::cuda);
    EXPECT_EQ(d_topk.body("topk"), want_topk) << "k = " << k;
    EXPECT_EQ(d_mean.body("mean"), want_mean) << "k = " << k;
  }
}

TEST(cuda_map_ops_api, NonDefaultStream) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  cudaStream_t raw = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking), cudaSuccess);
  const Stream s{raw};
  const int64_t n = 3, h = 40, w = 50;
  const auto in = random_maps(n * h * w, 5);
  std::vector<float> want_blur(in.size()), want_topk(n), want_mean(n);
  mapops::gaussian_blur(n, h, w, 4.f, in.data(), want_blur.data(), Device::cpu);
  mapops::row_topk_mean(n, h * w, 20, want_blur.data(), want_topk.data(), want_mean.data(),
                        Device::cpu);
  auto d_in = Buffer<float>::from_host(in, Device::cuda);
  Buffer<float> d_blur(in.size(), Device::cuda), d_topk(n, Device::cuda), d_mean(n, Device::cuda);
  // Blur then score on the same stream, with no sync in between.
  mapops::gaussian_blur(n, h, w, 4.f, d_in.data(), d_blur.data(), Device::cuda, s);
  mapops::row_topk_mean(n, h * w, 20, d_blur.data(), d_topk.data(), d_mean.data(), Device::cuda, s);
  const auto got_topk = d_topk.to_host(s), got_mean = d_mean.to_host(s);
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_NEAR(got_topk[r], want_topk[r], 1e-5) << r;
    EXPECT_NEAR(got_mean[r], want_mean[r], 1e-5) << r;
  }
  ASSERT_EQ(cudaStreamDestroy(raw), cudaSuccess);
}

}  // namespace
}  // namespace mirad

namespace mirad {
namespace {

TEST(cuda_map_ops_api, StandardizeAndAccumulateMatchCpuBitForBit) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  auto in = random_maps(4099, 8);
  in[5] = kNan, in[17] = kInf, in[40] = -kInf;
  const int64_t n = int64_t(in.size());
  std::vector<float> want(n), acc = random_maps(n, 9);
  mapops::standardize(n, in.data(), 0.37, 1.9, want.data(), Device::cpu);
  Guarded d_in(in), d_out(n), d_acc(acc);
  mapops::standardize(n, d_in.data(), 0.37, 1.9, d_out.data(), Device::cuda);
  EXPECT_EQ(d_out.body("standardize"), want);
  mapops::accumulate(n, 1.f / 3.f, want.data(), acc.data(), Device::cpu);
  mapops::accumulate(n, 1.f / 3.f, d_out.data(), d_acc.data(), Device::cuda);
  EXPECT_EQ(d_acc.body("accumulate"), acc);
}

}  // namespace
}  // namespace mirad
