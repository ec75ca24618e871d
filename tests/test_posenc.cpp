// CPU tests of the 2-D positional encoding: hand-computed entries, layout, range, uniqueness
// and shape validation.
// Suite names start with 'posenc' (lower case, as ctest -R matches case-sensitively) so that
// `ctest -R posenc` selects them.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "core/error.h"
#include "kernels/posenc.h"

namespace mirad {
namespace {

std::vector<double> table_d(int64_t D, int64_t H, int64_t W) {
  std::vector<double> out(H * W * D);
  positional_encoding_2d(D, H, W, out.data());
  return out;
}

std::vector<float> table_f(int64_t D, int64_t H, int64_t W) {
  std::vector<float> out(H * W * D);
  positional_encoding_2d(D, H, W, out.data(), Device::cpu);
  return out;
}

TEST(posenc, HandComputedD4) {
  // D = 4: half = 2, one frequency, div_term[0] = exp(0) = 1, so a row is
  // [sin x, cos x, sin y, cos y]. At y = 2, x = 3 of a 3 x 5 grid (row 2*5 + 3 = 13):
  // sin 3 = 0.14112000805986721, cos 3 = -0.98999249660044542,
  // sin 2 = 0.90929742682568170, cos 2 = -0.41614683654714241.
  const auto t = table_d(4, 3, 5);
  const double* row = t.data() + 13 * 4;
  EXPECT_NEAR(row[0], 0.1411200080598672, 1e-15);
  EXPECT_NEAR(row[1], -0.9899924966004454, 1e-15);
  EXPECT_NEAR(row[2], 0.9092974268256817, 1e-15);
  EXPECT_NEAR(row[3], -0.4161468365471424, 1e-15);
}

TEST(posenc, HandComputedD8) {
  // D = 8: half = 4, div_term = [exp(0), exp(-2*ln(1e4)/4)] = [1, 0.01].
  // Row = [sin x, cos x, sin .01x, cos .01x, sin y, cos y, sin .01y, cos .01y].
  const auto t = table_d(8, 6, 4);
  // y = 1, x = 2 -> row 1*4 + 2 = 6.
  const double want_12[8] = {0.9092974268256817,   -0.4161468365471424, 0.01999866669333308,
                             0.9998000066665778,   0.8414709848078965,  0.5403023058681398,
                             0.009999833334166664, 0.9999500004166653};
  for (int c = 0; c < 8; ++c) EXPECT_NEAR(t[6 * 8 + c], want_12[c], 1e-15) << "channel " << c;
  // y = 5, x = 0 -> row 20: the x half is [0, 1, 0, 1].
  const double want_50[8] = {0,
                             1,
                             0,
                             1,
                             -0.9589242746631385,
                             0.28366218546322625,
                             0.04997916927067833,
                             0.9987502603949663};
  for (int c = 0; c < 8; ++c) EXPECT_NEAR(t[20 * 8 + c], want_50[c], 1e-15) << "channel " << c;
  // The float table is the double one rounded once.
  const auto tf = table_f(8, 6, 4);
  for (size_t i = 0; i < t.size(); ++i) EXPECT_EQ(tf[i], static_cast<float>(t[i])) << i;
}

TEST(posenc, OriginRowIsSinZeroCosOne) {
  for (int64_t D : {4, 8, 64, 128}) {
    const auto t = table_f(D, 3, 2);
    for (int64_t c = 0; c < D; ++c) EXPECT_EQ(t[c], c % 2 == 0 ? 0.f : 1.f) << D << " " << c;
  }
}

TEST(posenc, ShapeAndRange) {
  const int64_t D = 64, H = 7, W = 13;
  Buffer<float> b = positional_encoding_2d(D, H, W, Device::cpu);
  ASSERT_EQ(b.size(), size_t(H * W * D));
  const std::vector<float> t = b.to_host();
  EXPECT_EQ(t, table_f(D, H, W));
  for (float v : t) {
    ASSERT_TRUE(std::isfinite(v));
    ASSERT_GE(v, -1.f);
    ASSERT_LE(v, 1.f);
  }
  // The x half depends only on the column and the y half only on the row.
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t c = 0; c < D / 2; ++c) {
        ASSERT_EQ(t[(y * W + x) * D + c], t[x * D + c]);
        ASSERT_EQ(t[(y * W + x) * D + D / 2 + c], t[(y * W) * D + D / 2 + c]);
      }
  // sin^2 + cos^2 = 1 per pair.
  for (int64_t r = 0; r < H * W; ++r)
    for (int64_t c = 0; c < D; c += 2) {
      const double s = t[r * D + c], co = t[r * D + c + 1];
      ASSERT_NEAR(s * s + co * co, 1.0, 1e-6);
    }
}

TEST(posenc, DistinctPositionsHaveDistinctCodes) {
  // 32 x 32 covers a stride-8 feature map of a 256 x 256 input.
  const int64_t D = 64, H = 32, W = 32;
  const auto t = table_f(D, H, W);
  std::set<std::vector<float>> codes;
  for (int64_t r = 0; r < H * W; ++r) codes.emplace(t.begin() + r * D, t.begin() + (r + 1) * D);
  EXPECT_EQ(codes.size(), size_t(H * W));
  // Neighbouring positions must be clearly apart, not merely different in the last bit.
  double min_dist2 = 1e9;
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x + 1 < W; ++x) {
      double d2 = 0;
      for (int64_t c = 0; c < D; ++c) {
        const double d = t[(y * W + x) * D + c] - t[(y * W + x + 1) * D + c];
        d2 += d * d;
      }
      min_dist2 = std::min(min_dist2, d2);
    }
  EXPECT_GT(min_dist2, 0.1);
}

TEST(posenc, BadShapesRejected) {
  std::vector<float> out(1024);
  for (int64_t D : {0, 2, 6, 63, -4})
    EXPECT_THROW(positional_encoding_2d(D, 2, 2, out.data(), Device::cpu), InputError) << D;
  EXPECT_THROW(positional_encoding_2d(8, 0, 2, out.data(), Device::cpu), InputError);
  EXPECT_THROW(positional_encoding_2d(8, 2, 0, out.data(), Device::cpu), InputError);
  EXPECT_THROW(positional_encoding_2d(8, 2, 2, static_cast<float*>(nullptr), Device::cpu),
               InputError);
  EXPECT_THROW(positional_encoding_2d(8, int64_t(1) << 40, int64_t(1) << 40, Device::cpu),
               InputError);
  try {
    positional_encoding_2d(6, 2, 2, out.data(), Device::cpu);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 4"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mirad
