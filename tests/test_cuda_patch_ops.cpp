// CUDA feature layout ops against the CPU reference on odd sizes with sentinel regions, and
// the CUDA gather's handling of bad indices (NaN rows, device count).
// Suite names start with 'cuda_patch_ops' so that `ctest -R patch_ops` selects them.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/buffer.h"
#include "cuda_diff.h"
#include "kernels/patch_ops.h"

namespace mirad {
namespace {

// n floats on the device inside sentinel padding (tests/cuda_diff.h).
using Guarded = test::Guarded<float, 97>;

std::vector<float> random_values(int64_t count, uint64_t seed) {
  return test::uniform_values(count, seed, -5.f, 5.f);
}

using Shape = std::tuple<int64_t, int64_t, int64_t>;  // n, C, HW

class cuda_patch_ops_transpose : public ::testing::TestWithParam<Shape> {};

TEST_P(cuda_patch_ops_transpose, ChwToRowsMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const auto [n, C, HW] = GetParam();
  const auto in = random_values(n * C * HW, C * 7 + HW);
  std::vector<float> want(in.size());
  patchops::chw_to_rows(n, C, HW, in.data(), want.data(), Device::cpu);
  Guarded d_in(in), d_out(int64_t(in.size()));
  patchops::chw_to_rows(n, C, HW, d_in.data(), d_out.data(), Device::cuda);
  // A pure data movement: bit-exact.
  EXPECT_EQ(d_out.body("chw_to_rows"), want);
  EXPECT_EQ(d_in.body("chw_to_rows input"), in);
}

// Tile edges (32) crossed on both axes, a single channel, a single position, and a real
// stride-8 tap of a 256 x 256 input (96 channels x 32 x 32).
INSTANTIATE_TEST_SUITE_P(OddSizes, cuda_patch_ops_transpose,
                         ::testing::Values(Shape{3, 33, 17}, Shape{1, 1, 1}, Shape{2, 96, 1024},
                                           Shape{1, 31, 65}, Shape{4, 64, 1}, Shape{5, 1, 77},
                                           Shape{2, 320, 28 * 79}),
                         [](const auto& info) {
                           const Shape& s = info.param;
                           return std::to_string(std::get<0>(s)) + "x" +
                                  std::to_string(std::get<1>(s)) + "x" +
                                  std::to_string(std::get<2>(s));
                         });

TEST(cuda_patch_ops, GatherMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (auto [C, HW, Cc, images, m] :
       {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{96, 1024, 64, 5, 2049},
        {3, 7, 4, 3, 1},
        {1, 1, 1, 1, 5},
        {272, 77, 128, 4, 333}}) {
    const int64_t n_rows = images * HW;
    const auto X = random_values(n_rows * C, 1);
    const auto P = random_values(HW * Cc, 2);
    std::mt19937_64 rng(3);
    std::uniform_int_distribution<int64_t> pick(0, n_rows - 1);
    std::vector<int64_t> idx(m);
    for (auto& i : idx) i = pick(rng);
    idx.back() = n_rows - 1;  // the last row, where an off-by-one would read past X
    std::vector<float> want_x(m * C), want_c(m * Cc);
    patchops::gather_rows(m, idx.data(), X.data(), C, n_rows, P.data(), HW, Cc, want_x.data(),
                          want_c.data(), Device::cpu);

    auto d_idx = Buffer<int64_t>::from_host(idx, Device::cuda);
    Guarded d_X(X), d_P(P), d_out_x(m * C), d_out_c(m * Cc);
    auto count = Buffer<unsigned long long>::from_host({0}, Device::cuda);
    patchops::gather_rows(m, d_idx.data(), d_X.data(), C, n_rows, d_P.data(), HW, Cc,
                          d_out_x.data(), d_out_c.data(), count.data(), Device::cuda);
    EXPECT_EQ(d_out_x.body("gather x"), want_x) << C << " " << HW;
    EXPECT_EQ(d_out_c.body("gather c"), want_c) << C << " " << HW;
    EXPECT_EQ(count.to_host()[0], 0u);
    // Without the condition output.
    Guarded d_only_x(m * C);
    patchops::gather_rows(m, d_idx.data(), d_X.data(), C, n_rows, nullptr, 0, 0, d_only_x.data(),
                          nullptr, Device::cuda);
    EXPECT_EQ(d_only_x.body("gather x only"), want_x);
  }
}

TEST(cuda_patch_ops, GatherTurnsBadIndicesIntoCountedNanRows) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t C = 5, HW = 4, Cc = 3, n_rows = 8;
  const auto X = random_values(n_rows * C, 4);
  const auto P = random_values(HW * Cc, 5);
  const std::vector<int64_t> idx = {1, -1, 7, 8, int64_t(1) << 40, 0};
  const int64_t m = int64_t(idx.size());
  auto d_idx = Buffer<int64_t>::from_host(idx, Device::cuda);
  Guarded d_X(X), d_P(P), d_out_x(m * C), d_out_c(m * Cc);
  auto count = Buffer<unsigned long long>::from_host({10}, Device::cuda);
  patchops::gather_rows(m, d_idx.data(), d_X.data(), C, n_rows, d_P.data(), HW, Cc, d_out_x.data(),
                        d_out_c.data(), count.data(), Device::cuda);
  EXPECT_EQ(count.to_host()[0], 13u);  // adds the 3 bad entries to the 10 already there
  const auto out_x = d_out_x.body("bad gather x"), out_c = d_out_c.body("bad gather c");
  for (int64_t j = 0; j < m; ++j) {
    const bool valid = idx[j] >= 0 && idx[j] < n_rows;
    for (int64_t c = 0; c < C; ++c) {
      if (valid)
        EXPECT_EQ(out_x[j * C + c], X[idx[j] * C + c]) << j;
      else
        EXPECT_TRUE(std::isnan(out_x[j * C + c])) << j;
    }
    for (int64_t c = 0; c < Cc; ++c) {
      if (valid)
        EXPECT_EQ(out_c[j * Cc + c], P[(idx[j] % HW) * Cc + c]) << j;
      else
        EXPECT_TRUE(std::isnan(out_c[j * Cc + c])) << j;
    }
  }
  // The plain overload never touches a counter, and still writes NaN rows.
  Guarded d_out_x2(m * C);
  patchops::gather_rows(m, d_idx.data(), d_X.data(), C, n_rows, nullptr, 0, 0, d_out_x2.data(),
                        nullptr, Device::cuda);
  const auto out_x2 = d_out_x2.body("bad gather x, no counter");
  EXPECT_TRUE(std::isnan(out_x2[1 * C]));
  EXPECT_EQ(out_x2[0], X[1 * C]);
}

TEST(cuda_patch_ops, RepeatRowsMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (auto [n, HW, Cc] :
       {Shape{1, 1, 1}, Shape{7, 1024, 64}, Shape{3, 77, 5}, Shape{33, 13, 128}}) {
    const auto P = random_values(HW * Cc, 9);
    std::vector<float> want(n * HW * Cc);
    patchops::repeat_rows(n, HW, Cc, P.data(), want.data(), Device::cpu);
    Guarded d_P(P), d_out(n * HW * Cc);
    patchops::repeat_rows(n, HW, Cc, d_P.data(), d_out.data(), Device::cuda);
    EXPECT_EQ(d_out.body("repeat_rows"), want) << n << " " << HW << " " << Cc;
  }
}

}  // namespace
}  // namespace mirad
