// Hybrid score and fused map on hand-computed cases; robust scales; rejection rules (IQR, MAD,
// two-component mixture) on hand values and on contaminated score samples.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/detector/threshold.h"
#include "engine/detector/scoring.h"
#include "expect_error.h"
#include "scoring_test_util.h"

using namespace mirad;

TEST(Scoring, RobustScaleIsMedianAndIqrOfFiniteValues) {
  // 1..9 plus NaN and Inf, which are left out: median 5, Q1 3, Q3 7 (numpy 'linear').
  std::vector<double> v = {9, 1, 8, 2, 7, 3, 6, 4, 5, NAN, INFINITY};
  const RobustScale s = robust_scale(v);
  EXPECT_DOUBLE_EQ(s.median, 5.0);
  EXPECT_DOUBLE_EQ(s.iqr, 4.0);
  // A constant sample has IQR 0: scale 1, not a division by zero.
  const RobustScale c = robust_scale(std::vector<double>{2, 2, 2, 2});
  EXPECT_DOUBLE_EQ(c.median, 2.0);
  EXPECT_DOUBLE_EQ(c.iqr, 1.0);
}

TEST(Scoring, FusedMapStandardisesUpsamplesAndAverages) {
  // Two taps: a 2x2 grid and a 1x1 grid (upsampled to a constant 2x2), one image.
  TapMaps maps;
  maps.grids = {{2, 2}, {1, 1}};
  maps.n_images = 1;
  maps.nll = {{1, 3, 5, 7}, {10}};
  // Tap 0: median 2, IQR 2 -> (x - 2)/2 = -0.5, 0.5, 1.5, 2.5.
  // Tap 1: median 4, IQR 3 -> (10 - 4)/3 = 2 everywhere.
  const std::vector<RobustScale> taps = {{2, 2}, {4, 3}};
  const auto fused = fuse_maps(maps, taps);
  ASSERT_EQ(fused.size(), 4u);
  const double expect[4] = {0.75, 1.25, 1.75, 2.25};  // mean of the two taps
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(fused[i], expect[i], 1e-6) << i;
  // NaN patch NLL is carried on as +Inf (the most anomalous value).
  maps.nll[0][2] = NAN;
  const auto with_nan = fuse_maps(maps, taps);
  EXPECT_TRUE(std::isinf(with_nan[2]) && with_nan[2] > 0);
}

TEST(Scoring, ImagePartsAndHybridScoreByHand) {
  // Two images of 200 cells: top 1% = the 2 largest values.
  std::vector<float> fused(400, 0.0f);
  fused[10] = 4, fused[20] = 2, fused[30] = 1;    // image 0: top-2 mean 3, mean 7/200
  fused[200 + 5] = 10;                             // image 1: top-2 mean 5, mean 10/200
  std::vector<double> top, mean;
  image_parts(fused, 2, 200, 0.01, top, mean);
  EXPECT_DOUBLE_EQ(top[0], 3.0);
  EXPECT_DOUBLE_EQ(top[1], 5.0);
  EXPECT_NEAR(mean[0], 0.035, 1e-9);
  EXPECT_NEAR(mean[1], 0.05, 1e-9);
  ScoreStats st;
  st.top = {1.0, 2.0};     // (top - 1)/2
  st.mean = {0.01, 0.02};  // (mean - 0.01)/0.02
  // image 0: 0.5*1 + 0.5*1.25 = 1.125; image 1: 0.5*2 + 0.5*2 = 2.
  const auto s = hybrid_scores(top, mean, st, 0.5);
  // The parts are float (the maps are), so ~1e-8 of rounding.
  EXPECT_NEAR(s[0], 1.125, 1e-6);
  EXPECT_NEAR(s[1], 2.0, 1e-6);
  // w = 1 is the top part alone.
  EXPECT_NEAR(hybrid_scores(top, mean, st, 1.0)[0], 1.0, 1e-12);
  // A non-finite part makes the score +Inf.
  top[0] = NAN;
  EXPECT_TRUE(std::isinf(hybrid_scores(top, mean, st, 0.5)[0]));
}

TEST(Scoring, CalibrationScoresAreConsistentWithScoringAlone) {
  // Scores from calibrate_scores equal score_images with the fitted stats: the statistics,
  // not the batch, decide a score.
  TapMaps maps = mirad::test::random_tap_maps({{4, 5}, {2, 3}}, 12, 3);
  ScoreSettings ss;
  std::vector<double> calib;
  const ScoreStats st = calibrate_scores(maps, ss, calib);
  const auto again = score_images(maps, st, ss);
  ASSERT_EQ(again.size(), calib.size());
  for (size_t i = 0; i < calib.size(); ++i) EXPECT_EQ(again[i], calib[i]);
  // Image 7 alone gets the same score as inside the batch.
  TapMaps one;
  one.grids = maps.grids;
  one.n_images = 1;
  for (size_t t = 0; t < maps.grids.size(); ++t) {
    const int64_t hw = maps.grids[t].size();
    one.nll.push_back(std::vector<float>(maps.nll[t].begin() + 7 * hw, maps.nll[t].begin() + 8 * hw));
  }
  EXPECT_EQ(score_images(one, st, ss)[0], calib[7]);
}

// The device-generic scoring path (DeviceTapMaps), run on the CPU, is the host path itself:
// identical scores and fused maps, bit for bit, for maps with a NaN and two grid sizes.
TEST(Scoring, DeviceTapMapsOnTheCpuEqualTheHostPath) {
  TapMaps maps = mirad::test::random_tap_maps({{6, 7}, {3, 4}}, 9, 5);
  maps.nll[1][13] = NAN;
  ScoreSettings ss;
  std::vector<double> calib;
  const ScoreStats st = calibrate_scores(maps, ss, calib);
  std::vector<float> fused;
  const auto want = score_images(maps, st, ss, &fused);
  DeviceTapMaps dm = mirad::test::to_device(maps, Device::cpu);
  Buffer<float> dfused;
  const auto got = score_images(dm, st, ss, &dfused);
  EXPECT_EQ(got, want);
  const auto df = dfused.to_host();
  ASSERT_EQ(df.size(), fused.size());
  for (size_t i = 0; i < df.size(); ++i)
    ASSERT_TRUE(df[i] == fused[i] || (std::isnan(df[i]) && std::isnan(fused[i])))
        << i << ": " << df[i] << " vs " << fused[i];
  // Wrong sizes are refused, not read past.
  dm.nll[0] = Buffer<float>::from_host(std::vector<float>(5, 0.f), Device::cpu);
  mirad::test::expect_input_error([&] { score_images(dm, st, ss); }, "tap 0 has 5 values");
}

TEST(Rejection, IqrAndMadRulesByHand) {
  const std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  // Q1 3, Q3 7, IQR 4: tau = 7 + 1.5*4 = 13.
  EXPECT_DOUBLE_EQ(rejection_threshold(x, RejectionRule::iqr, 1.5).tau, 13.0);
  // median 5, |x - 5| = 4 3 2 1 0 1 2 3 4 -> MAD 2: tau = 5 + 3*1.4826*2.
  EXPECT_NEAR(rejection_threshold(x, RejectionRule::mad, 3.0).tau, 5 + 3 * 1.4826 * 2, 1e-12);
  // An unknown rule cannot reach here: the config refuses it where it is read
  // (test_detector_model.cpp, DetectorConfig.RejectsUnknownKeysWrongTypesAndRanges).
  mirad::test::expect_input_error([&] { rejection_threshold({}, RejectionRule::iqr, 1.0); }, "no finite");
}

// Scores of a contaminated training set: clean ~ N(0, 1), contaminants ~ N(6, 1).
std::vector<double> contaminated_scores(int n, double fraction, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd;
  std::vector<double> s;
  const int bad = int(std::lround(fraction * n));
  for (int i = 0; i < n; ++i) s.push_back(i < bad ? 6.0 + nd(rng) : nd(rng));
  return s;
}

double recall_above(const std::vector<double>& s, double frac, double tau) {
  const int bad = int(std::lround(frac * s.size()));
  int hit = 0;
  for (int i = 0; i < bad; ++i) hit += s[i] > tau;
  return double(hit) / bad;
}

double false_rate_above(const std::vector<double>& s, double frac, double tau) {
  const int bad = int(std::lround(frac * s.size()));
  int hit = 0;
  for (size_t i = bad; i < s.size(); ++i) hit += s[i] > tau;
  return double(hit) / double(s.size() - bad);
}

// At 40% the median itself sits at the clean scores' 83rd percentile and the contaminants
// inflate the MAD, so median + 3*MAD breaks down like Q3 + 1.5*IQR; the mixture holds.
TEST(Rejection, MixtureHoldsAtFortyPercentWhereIqrAndMadBreak) {
  const auto s = contaminated_scores(400, 0.4, 11);
  const double t_iqr = rejection_threshold(s, RejectionRule::iqr, 1.5).tau;
  const double t_mad = rejection_threshold(s, RejectionRule::mad, 3.0).tau;
  const auto gmm = rejection_threshold(s, RejectionRule::gmm, 1.5);
  std::printf("40%%: iqr tau %.2f (recall %.2f), mad tau %.2f (recall %.2f), gmm tau %.2f "
              "(recall %.2f, false %.3f) %s\n", t_iqr, recall_above(s, 0.4, t_iqr), t_mad,
              recall_above(s, 0.4, t_mad), gmm.tau, recall_above(s, 0.4, gmm.tau),
              false_rate_above(s, 0.4, gmm.tau), gmm.detail.c_str());
  // Q3 lies among the contaminants: the IQR rule rejects almost none of them.
  EXPECT_LT(recall_above(s, 0.4, t_iqr), 0.2);
  EXPECT_GT(recall_above(s, 0.4, gmm.tau), 0.95);
  EXPECT_LT(false_rate_above(s, 0.4, gmm.tau), 0.02);
  EXPECT_LT(recall_above(s, 0.4, t_mad), 0.2);
  // At 20% the MAD rule still holds (and so does the IQR rule, just).
  const auto s20 = contaminated_scores(400, 0.2, 12);
  const double m20 = rejection_threshold(s20, RejectionRule::mad, 3.0).tau;
  const double q20 = rejection_threshold(s20, RejectionRule::iqr, 1.5).tau;
  std::printf("20%%: mad tau %.2f (recall %.2f, false %.3f), iqr tau %.2f (recall %.2f)\n", m20,
              recall_above(s20, 0.2, m20), false_rate_above(s20, 0.2, m20), q20,
              recall_above(s20, 0.2, q20));
  EXPECT_GT(recall_above(s20, 0.2, m20), 0.9);
  EXPECT_LT(false_rate_above(s20, 0.2, m20), 0.02);
}

TEST(Rejection, MixtureFallsBackOnOneCluster) {
  // Clean data only: the mixture must not split one Gaussian into "clean" and "defective".
  const auto s = contaminated_scores(300, 0.0, 5);
  const auto gmm = rejection_threshold(s, RejectionRule::gmm, 1.5);
  EXPECT_NE(gmm.detail.find("one cluster"), std::string::npos) << gmm.detail;
  EXPECT_LT(false_rate_above(s, 0.0, gmm.tau), 0.02);
  // EM recovers the two components of a clear mixture.
  const auto m = fit_mixture2(contaminated_scores(1000, 0.3, 9));
  EXPECT_NEAR(m.mean[0], 0.0, 0.15);
  EXPECT_NEAR(m.mean[1], 6.0, 0.2);
  EXPECT_NEAR(m.weight[1], 0.3, 0.03);
}

// The medcouple by hand (pairs x_i <= 3.5 <= x_j of {1, 2, 3, 4, 8, 20}: the nine kernel values
// -2/3, -1/2, 0, 2/7, 1/2, 14/19, 4/5, 5/6, 16/17 have median 1/2), its symmetries, and the
// exponential distribution's population value 1/3 (Brys, Hubert & Struyf 2004).
TEST(Rejection, MedcoupleByHandAndOnTheExponential) {
  const std::vector<double> x = {20, 1, 4, 3, 8, 2};
  EXPECT_DOUBLE_EQ(medcouple(x), 0.5);
  std::vector<double> neg, affine;
  for (double v : x) neg.push_back(-v), affine.push_back(3 * v - 7);
  EXPECT_DOUBLE_EQ(medcouple(neg), -0.5);
  EXPECT_NEAR(medcouple(affine), 0.5, 1e-15);
  EXPECT_DOUBLE_EQ(medcouple({1, 2, 3, 4, 5}), 0.0);
  // Ties at the median count by position, not as a block of zeros or ones.
  EXPECT_DOUBLE_EQ(medcouple(std::vector<double>(9, 2.0)), 0.0);
  // Above 4096 values the order-statistic subsample keeps the shape.
  for (int n : {3001, 20001}) {
    std::vector<double> e;
    for (int i = 0; i < n; ++i) e.push_back(-std::log(1.0 - (i + 0.5) / n));
    EXPECT_NEAR(medcouple(e), 1.0 / 3.0, 3e-3) << n;
  }
  // The adjusted fence: Q3 + 1.5 * exp(3 * 0.5) * IQR with numpy's quartiles 2.25 and 7.
  const auto t = rejection_threshold(x, RejectionRule::adjusted, 1.5);
  EXPECT_NEAR(t.tau, 7 + 1.5 * std::exp(1.5) * 4.75, 1e-12) << t.detail;
}
