// CPU quantiles against hand-computed numpy 'linear' (method 7) values, edge cases and errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "core/error.h"
#include "kernels/quantiles.h"

namespace mirad {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// One row of the hand-computed table. Every expected value is exact in double, so the
// comparison is exact too. The rule: h = (n-1)*p, lo = floor(h), q = x[lo] + (h-lo)*(x[lo+1]-x[lo])
// over the sorted non-NaN values. Each was also checked against
// np.quantile(x[~np.isnan(x)], [.25, .5, .75], method='linear').
struct HandCase {
  std::string name;
  std::vector<float> scores;
  double q1, median, q3;
  int64_t n_valid, n_nan;
};

std::vector<HandCase> hand_cases() {
  return {
      // n=5, h = 1, 2, 3: plain order statistics x[1], x[2], x[3].
      {"odd_length", {1, 2, 3, 4, 5}, 2.0, 3.0, 4.0, 5, 0},
      // n=4, h = 0.75, 1.5, 2.25: 1 + 0.75*1, 2 + 0.5*1, 3 + 0.25*1.
      {"even_length", {1, 2, 3, 4}, 1.75, 2.5, 3.25, 4, 0},
      // n=1: h = 0 for every p.
      {"single", {7}, 7.0, 7.0, 7.0, 1, 0},
      // n=2, h = 0.25, 0.5, 0.75: 10 + h*10.
      {"pair", {20, 10}, 12.5, 15.0, 17.5, 2, 0},
      // Sorted 1 2 2 2 3 9, h = 1.25, 2.5, 3.75: x1=x2=2; x2=x3=2; 2 + 0.75*(3-2).
      {"ties", {2, 9, 2, 1, 3, 2}, 2.0, 2.0, 2.75, 6, 0},
      // Every order statistic is 4.
      {"all_equal", {4, 4, 4, 4, 4, 4, 4}, 4.0, 4.0, 4.0, 7, 0},
      // NaNs dropped: {3, 1, 4, 2} sorts to 1 2 3 4, the even_length row again.
      {"nan_interspersed", {kNaN, 3, kNaN, 1, 4, kNaN, 2}, 1.75, 2.5, 3.25, 4, 3},
      // Sorted -10 -3 0 2 5, h = 1, 2, 3.
      {"negative", {-3, 5, -10, 0, 2}, -3.0, 0.0, 2.0, 5, 0},
      // Sorted 0.5 1 2 3 6 7 8 9, h = 1.75, 3.5, 5.25:
      // 1 + 0.75*(2-1) = 1.75; 3 + 0.5*(6-3) = 4.5; 7 + 0.25*(8-7) = 7.25.
      {"unsorted_fractional", {0.5f, 8, 3, 6, 1, 9, 2, 7}, 1.75, 4.5, 7.25, 8, 0},
      // 2^24 and 2^24 + 2 are floats, but 2^24 + 0.5 and 2^24 + 1 are not: the mix happens
      // in double. h = 0.25, 0.5, 0.75: 16777216 + h*2.
      {"interpolates_in_double",
       {16777218.0f, 16777216.0f},
       16777216.5,
       16777217.0,
       16777217.5,
       2,
       0},
  };
}

class QuartilesHandTable : public ::testing::TestWithParam<HandCase> {};

TEST_P(QuartilesHandTable, MatchesHandComputedValues) {
  const HandCase& c = GetParam();
  const QuartileStats s = quartiles_cpu(c.scores.data(), static_cast<int64_t>(c.scores.size()));
  EXPECT_EQ(s.q1, c.q1);
  EXPECT_EQ(s.median, c.median);
  EXPECT_EQ(s.q3, c.q3);
  EXPECT_EQ(s.iqr, c.q3 - c.q1);
  EXPECT_EQ(s.n_valid, c.n_valid);
  EXPECT_EQ(s.n_nan, c.n_nan);
}

TEST_P(QuartilesHandTable, DoubleOverloadAgrees) {
  const HandCase& c = GetParam();
  const std::vector<double> scores(c.scores.begin(), c.scores.end());
  const QuartileStats s = quartiles_cpu(scores.data(), static_cast<int64_t>(scores.size()));
  EXPECT_EQ(s.q1, c.q1);
  EXPECT_EQ(s.median, c.median);
  EXPECT_EQ(s.q3, c.q3);
  EXPECT_EQ(s.n_nan, c.n_nan);
}

TEST_P(QuartilesHandTable, GeneralQuantilesAgree) {
  const HandCase& c = GetParam();
  const std::vector<double> q =
      quantiles_cpu(c.scores.data(), static_cast<int64_t>(c.scores.size()), {0.75, 0.25, 0.5});
  ASSERT_EQ(q.size(), 3u);
  // Results come back in the order the probabilities were asked for.
  EXPECT_EQ(q[0], c.q3);
  EXPECT_EQ(q[1], c.q1);
  EXPECT_EQ(q[2], c.median);
}

TEST_P(QuartilesHandTable, DispatchToCpuAgrees) {
  const HandCase& c = GetParam();
  const QuartileStats s =
      quartiles(c.scores.data(), static_cast<int64_t>(c.scores.size()), Device::cpu, Stream{});
  EXPECT_EQ(s.median, c.median);
  EXPECT_EQ(s.n_valid, c.n_valid);
}

INSTANTIATE_TEST_SUITE_P(quantiles, QuartilesHandTable, ::testing::ValuesIn(hand_cases()),
                         [](const auto& info) { return info.param.name; });

TEST(quantiles, GeneralProbabilitiesIncludingEnds) {
  // Sorted 0.5 1 2 3 6 7 8 9 (n=8).
  // p=0 -> x0 = 0.5; p=1 -> x7 = 9;
  // p=0.1: h = 0.7 -> 0.5 + 0.7*(1-0.5) = 0.85; p=0.9: h = 6.3 -> 8 + 0.3*(9-8) = 8.3.
  // 0.1 and 0.9 are not exact in binary, hence the tolerance on those two only.
  const std::vector<float> scores = {0.5f, 8, 3, 6, 1, 9, 2, 7};
  const std::vector<double> q = quantiles_cpu(scores.data(), 8, {0.0, 0.1, 0.9, 1.0});
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[0], 0.5);
  EXPECT_NEAR(q[1], 0.85, 1e-12);
  EXPECT_NEAR(q[2], 8.3, 1e-12);
  EXPECT_EQ(q[3], 9.0);
  EXPECT_TRUE(quantiles_cpu(scores.data(), 8, {}).empty());
}

TEST(quantiles, InfinitiesAreValuesAtTheEnds) {
  // Sorted 1 2 3 +Inf: Q1 and the median do not reach the Inf; Q3 (h = 2.25) mixes 3 with
  // +Inf, which is +Inf. numpy gives the same.
  const std::vector<float> high = {kInf, 1, 3, 2};
  QuartileStats s = quartiles_cpu(high.data(), 4);
  EXPECT_EQ(s.q1, 1.75);
  EXPECT_EQ(s.median, 2.5);
  EXPECT_EQ(s.q3, kInf);
  EXPECT_EQ(s.iqr, kInf);
  EXPECT_EQ(s.n_valid, 4);

  // Sorted -Inf 1 2 3: Q1 (h = 0.75) mixes -Inf with 1; the limit is -Inf (numpy agrees),
  // where the bare formula would give -Inf + Inf = NaN.
  const std::vector<float> low = {2, -kInf, 3, 1};
  s = quartiles_cpu(low.data(), 4);
  EXPECT_EQ(s.q1, -kInf);
  EXPECT_EQ(s.median, 1.5);
  EXPECT_EQ(s.q3, 2.25);

  // All +Inf: every quartile is +Inf and the IQR is 0 (not Inf - Inf); the IQR fence on them
  // (test_threshold.cpp) is +Inf.
  const std::vector<float> all_inf = {kInf, kInf, kInf};
  s = quartiles_cpu(all_inf.data(), 3);
  EXPECT_EQ(s.q1, kInf);
  EXPECT_EQ(s.q3, kInf);
  EXPECT_EQ(s.iqr, 0.0);

  // -Inf next to +Inf: exact order statistics (p = 0, 1) are returned as they are (numpy
  // returns NaN there); strictly between them there is no meaningful value, so NaN.
  const std::vector<float> both = {kInf, -kInf};
  const std::vector<double> q = quantiles_cpu(both.data(), 2, {0.0, 0.5, 1.0});
  EXPECT_EQ(q[0], -kInf);
  EXPECT_TRUE(std::isnan(q[1]));
  EXPECT_EQ(q[2], kInf);
}

TEST(quantiles, SignedZerosTie) {
  // -0.0 == +0.0, so any order of the two gives a median equal to 0.
  const std::vector<float> zeros = {0.0f, -0.0f, 0.0f, -0.0f};
  const QuartileStats s = quartiles_cpu(zeros.data(), 4);
  EXPECT_EQ(s.q1, 0.0);
  EXPECT_EQ(s.median, 0.0);
  EXPECT_EQ(s.q3, 0.0);
  EXPECT_EQ(s.iqr, 0.0);
}

TEST(quantiles, InputIsNotModified) {
  std::vector<float> scores = {9, kNaN, -1, 4, 4, kInf, 0.25f, kNaN, 3, 7, -2};
  const std::vector<float> before = scores;
  quartiles_cpu(scores.data(), static_cast<int64_t>(scores.size()));
  quantiles_cpu(scores.data(), static_cast<int64_t>(scores.size()), {0.1, 0.5, 0.99});
  // Byte comparison, because NaN != NaN.
  EXPECT_EQ(std::memcmp(scores.data(), before.data(), scores.size() * sizeof(float)), 0);
}

using mirad::test::expect_input_error;

TEST(quantiles, EmptyThrows) {
  const std::vector<float> none;
  expect_input_error([&] { quartiles_cpu(none.data(), 0); }, "quantiles of an empty score array");
  expect_input_error([&] { quartiles_cpu(static_cast<const float*>(nullptr), 0); },
                     "quantiles of an empty score array");
  expect_input_error([&] { quantiles_cpu(none.data(), 0, {0.5}); },
                     "quantiles of an empty score array");
  expect_input_error([&] { quartiles_cpu(none.data(), -3); }, "negative");
}

TEST(quantiles, AllNaNThrows) {
  const std::vector<float> nans = {kNaN, kNaN, kNaN};
  expect_input_error([&] { quartiles_cpu(nans.data(), 3); }, "all 3 scores are NaN");
  const std::vector<double> nans_d = {std::nan(""), std::nan("")};
  expect_input_error([&] { quartiles_cpu(nans_d.data(), 2); }, "all 2 scores are NaN");
}

TEST(quantiles, ProbabilityOutsideUnitIntervalThrows) {
  const std::vector<float> scores = {1, 2, 3};
  for (double p : {-0.01, 1.01, -static_cast<double>(kInf), static_cast<double>(kNaN)})
    expect_input_error([&] { quantiles_cpu(scores.data(), 3, {0.5, p}); }, "outside [0, 1]");
}

#ifndef MIRAD_HAVE_CUDA
TEST(quantiles, CudaRequestInCpuOnlyBuildThrows) {
  const std::vector<float> scores = {1, 2, 3};
  expect_input_error([&] { quartiles(scores.data(), 3, Device::cuda, Stream{}); },
                     "no CUDA backend");
}
#endif

// Independent brute force: a full sort, then the formula written out directly.
std::vector<double> brute_force_quantiles(const std::vector<float>& scores,
                                          const std::vector<double>& probs) {
  std::vector<double> sorted;
  for (float v : scores)
    if (!std::isnan(v)) sorted.push_back(v);
  std::sort(sorted.begin(), sorted.end());
  std::vector<double> out;
  for (double p : probs) {
    const double h = static_cast<double>(sorted.size() - 1) * p;
    const std::size_t lo = static_cast<std::size_t>(std::floor(h));
    const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
    out.push_back(sorted[lo] + (h - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]));
  }
  return out;
}

TEST(quantiles, LargeRandomMatchesSortBasedBruteForce) {
  std::mt19937_64 rng(20250301);
  std::normal_distribution<float> normal(3.0f, 2.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const std::vector<double> probs = {0.0, 0.01, 0.25, 0.3333, 0.5, 0.75, 0.9, 0.999, 1.0};
  for (int64_t n : {1000003, 65536, 4097}) {
    std::vector<float> scores(static_cast<std::size_t>(n));
    int64_t n_nan = 0;
    for (float& v : scores) {
      v = unit(rng) < 0.01f ? kNaN : normal(rng);
      n_nan += std::isnan(v);
    }
    const std::vector<double> expected = brute_force_quantiles(scores, probs);
    const std::vector<double> got = quantiles_cpu(scores.data(), n, probs);
    ASSERT_EQ(got.size(), expected.size());
    for (std::size_t i = 0; i < probs.size(); ++i)
      EXPECT_EQ(got[i], expected[i]) << "n=" << n << " p=" << probs[i];

    const QuartileStats s = quartiles_cpu(scores.data(), n);
    EXPECT_EQ(s.q1, expected[2]);
    EXPECT_EQ(s.median, expected[4]);
    EXPECT_EQ(s.q3, expected[5]);
    EXPECT_EQ(s.n_nan, n_nan);
    EXPECT_EQ(s.n_valid, n - n_nan);
  }
}

TEST(quantiles, PositionAndInterpolationHelpers) {
  // n=8, p=0.75: h = 5.25.
  QuantilePosition pos = quantile_position(8, 0.75);
  EXPECT_EQ(pos.lo, 5);
  EXPECT_EQ(pos.hi, 6);
  EXPECT_EQ(pos.frac, 0.25);
  // p=1 sits on the last value; there is no x[n].
  pos = quantile_position(8, 1.0);
  EXPECT_EQ(pos.lo, 7);
  EXPECT_EQ(pos.hi, 7);
  EXPECT_EQ(pos.frac, 0.0);
  EXPECT_EQ(interpolate_quantile(2.0, 6.0, 0.25), 3.0);
  // A zero weight must not multiply an infinite difference (0*Inf = NaN).
  EXPECT_EQ(interpolate_quantile(2.0, kInf, 0.0), 2.0);
}

}  // namespace
}  // namespace mirad
