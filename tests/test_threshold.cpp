// The threshold home (engine/detector/threshold.h): the IQR fence and the decision threshold on
// hand-computed cases. The rejection rules' own cases are in test_scoring.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "engine/detector/threshold.h"
#include "expect_error.h"
#include "kernels/quantiles.h"

namespace mirad {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

TEST(Threshold, IqrFenceIsQ3PlusKTimesIqr) {
  // Sorted 0.5 1 2 3 6 7 8 9: Q1 = 1.75, Q3 = 7.25, IQR = 5.5; tau = 7.25 + 1.5*5.5 = 15.5.
  const std::vector<float> scores = {0.5f, 8, 3, 6, 1, 9, 2, 7};
  const QuartileStats s = quartiles_cpu(scores.data(), 8);
  EXPECT_EQ(s.iqr, 5.5);
  EXPECT_EQ(iqr_fence(s, 1.5), 15.5);
  EXPECT_EQ(iqr_fence(s, 0.0), 7.25);
  // Sorted -10 -3 0 2 5: IQR = 2 - (-3) = 5, tau = 2 + 7.5 = 9.5.
  const std::vector<float> negative = {-3, 5, -10, 0, 2};
  EXPECT_EQ(iqr_fence(quartiles_cpu(negative.data(), 5), 1.5), 9.5);
  // All +Inf: Q3 is +Inf and the IQR 0 (not Inf - Inf), so the fence is +Inf, not NaN, and
  // nothing can exceed it.
  const std::vector<float> all_inf = {float(kInf), float(kInf), float(kInf)};
  EXPECT_EQ(iqr_fence(quartiles_cpu(all_inf.data(), 3), 1.5), kInf);
}

TEST(Threshold, DecisionThresholdIqrAndFprByHand) {
  // Finite scores 1..9 (NaN and Inf are left out): Q3 7, IQR 4.
  const std::vector<double> s = {5, 1, std::nan(""), 9, 3, 7, kInf, 2, 8, 4, 6};
  ThresholdSettings t;
  t.rule = ThresholdRule::iqr, t.k = 1.5;
  std::string detail;
  EXPECT_EQ(decision_threshold(s, t, &detail), 13.0);  // 7 + 1.5*4
  EXPECT_EQ(detail, "Q3 + 1.5*IQR of retained scores = 7 + 1.5*4");
  t.k = 0.5;
  EXPECT_EQ(decision_threshold(s, t), 9.0);  // 7 + 0.5*4
  // fpr 0.25: the 0.75 quantile, h = 8*0.75 = 6 -> the 7th smallest, 7.
  t.rule = ThresholdRule::fpr, t.target_fpr = 0.25;
  EXPECT_EQ(decision_threshold(s, t, &detail), 7.0);
  EXPECT_EQ(detail, "0.75 quantile of retained scores = 7");
  // fpr 0.1: h = 8*0.9 = 7.2 -> 8 + 0.2*(9 - 8).
  t.target_fpr = 0.1;
  EXPECT_NEAR(decision_threshold(s, t), 8.2, 1e-12);
}

TEST(Threshold, DecisionThresholdWithoutAFiniteScoreIsAnInputError) {
  ThresholdSettings t;
  mirad::test::expect_input_error(
      [&] { decision_threshold({std::nan(""), kInf, -kInf}, t); },
      "every calibration score is NaN or Inf");
  mirad::test::expect_input_error([&] { decision_threshold({}, t); },
                                  "every calibration score is NaN or Inf");
}

}  // namespace
}  // namespace mirad
