// Evaluation metrics against hand-computed values: AUROC and F1 with ties and non-finite
// scores, 8-connected components, AUPRO with interpolation at max_fpr, cleaning metrics, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "core/error.h"
#include "engine/detector/metrics.h"
#include "expect_error.h"

namespace mirad::metrics {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kNaNf = std::numeric_limits<float>::quiet_NaN();
constexpr float kInff = std::numeric_limits<float>::infinity();
// Hand values are exact fractions; the code forms each ratio once, so a few ulps suffice.
constexpr double kTol = 1e-12;

using Scores = std::vector<double>;
using Labels = std::vector<uint8_t>;

double auroc_of(const Scores& s, const Labels& l) {
  return auroc(s, l);
}

// ---------------------------------------------------------------------------------------------
// Image AUROC
// ---------------------------------------------------------------------------------------------

TEST(MetricsAuroc, ScikitLearnDocExample) {
  // Defective {0.35, 0.8} vs good {0.1, 0.4}: 0.35 beats 0.1 only, 0.8 beats both -> 3/4.
  EXPECT_NEAR(auroc_of({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75, kTol);
}

TEST(MetricsAuroc, TiesGetHalfCredit) {
  // One tied pair: 1/2.
  EXPECT_NEAR(auroc_of({1, 1}, {0, 1}), 0.5, kTol);
  // Defective {0.5, 0.9} vs good {0.2, 0.5}: 0.5 > 0.2 (1), 0.5 = 0.5 (1/2), 0.9 beats both (2)
  // -> 3.5 / 4.
  EXPECT_NEAR(auroc_of({0.2, 0.5, 0.5, 0.9}, {0, 1, 0, 1}), 0.875, kTol);
  // Everything tied: every pair is 1/2.
  EXPECT_NEAR(auroc_of({3, 3, 3, 3, 3}, {0, 1, 1, 0, 0}), 0.5, kTol);
}

TEST(MetricsAuroc, PerfectAndInvertedRankings) {
  EXPECT_EQ(auroc_of({0.1, 0.2, 0.3, 0.7, 0.9}, {0, 0, 0, 1, 1}), 1.0);
  EXPECT_EQ(auroc_of({0.1, 0.2, 0.3, 0.7, 0.9}, {1, 1, 0, 0, 0}), 0.0);
}

TEST(MetricsAuroc, LabelsAreNonzeroNotJustOne) {
  EXPECT_NEAR(auroc_of({0.1, 0.4, 0.35, 0.8}, {0, 0, 7, 255}), 0.75, kTol);
}

TEST(MetricsAuroc, NanRanksWithPlusInfAboveEveryFiniteScore) {
  // Defective {NaN, -Inf} vs good {+Inf, 5}: NaN ties +Inf (1/2) and beats 5 (1); -Inf loses
  // both (0) -> 1.5 / 4.
  EXPECT_NEAR(auroc_of({kNaN, kInf, 5, -kInf}, {1, 0, 0, 1}), 0.375, kTol);
  // A NaN defective image above the largest finite good score: perfect.
  EXPECT_EQ(auroc_of({1e308, kNaN}, {0, 1}), 1.0);
  // Two NaNs tie.
  EXPECT_NEAR(auroc_of({kNaN, kNaN}, {0, 1}), 0.5, kTol);
  // NaN good image vs finite defective: the good one is the most anomalous.
  EXPECT_EQ(auroc_of({kNaN, 1e308}, {0, 1}), 0.0);
}

TEST(MetricsAuroc, SignedZerosTie) {
  EXPECT_NEAR(auroc_of({-0.0, 0.0}, {1, 0}), 0.5, kTol);
}

TEST(MetricsAuroc, DoesNotDependOnInputOrder) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(0, 9);  // few levels: many ties
  Scores s(200);
  Labels l(200);
  for (size_t i = 0; i < s.size(); ++i) {
    s[i] = level(rng);
    l[i] = uint8_t(level(rng) < 3);
  }
  const double a = auroc_of(s, l);
  std::vector<size_t> order(s.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  Scores s2;
  Labels l2;
  for (size_t i : order) {
    s2.push_back(s[i]);
    l2.push_back(l[i]);
  }
  EXPECT_EQ(auroc_of(s2, l2), a);  // integer counting: bit-identical
}

TEST(MetricsAuroc, RejectsBadInput) {
  test::expect_input_error([] { auroc_of({1, 2}, {1, 1}); }, "auroc", "no good images");
  test::expect_input_error([] { auroc_of({1, 2}, {0, 0}); }, "auroc", "no defective images");
  test::expect_input_error([] { auroc_of({1, 2}, {0}); }, "scores (2) and labels (1)");
  test::expect_input_error([] { auroc_of({}, {}); }, "no scores");
}

// ---------------------------------------------------------------------------------------------
// F1
// ---------------------------------------------------------------------------------------------

// Shared case: scores 0.9 0.8 0.8 0.7 0.3 with labels 1 1 0 1 0 (3 defective).
const Scores kF1Scores = {0.9, 0.8, 0.8, 0.7, 0.3};
const Labels kF1Labels = {1, 1, 0, 1, 0};

TEST(MetricsF1Max, TakesTheBestGroupBoundary) {
  // F1 = 2TP / (TP + FP + 3) at each ">= t":
  //   t=0.9: TP1 FP0 -> 2/4;  t=0.8: TP2 FP1 -> 4/6;  t=0.7: TP3 FP1 -> 6/7;  t=0.3: 6/8.
  const F1 r = f1_max(kF1Scores, kF1Labels);
  EXPECT_NEAR(r.f1, 6.0 / 7.0, kTol);
  EXPECT_EQ(r.threshold, 0.7);
  EXPECT_NEAR(r.precision, 0.75, kTol);
  EXPECT_NEAR(r.recall, 1.0, kTol);
}

TEST(MetricsF1Max, TiedScoresGoInTogether) {
  // Scores 0.9 0.5 0.5 0.1, labels 1 1 0 0 (2 defective). The 0.5 pair is one group:
  //   t=0.9: 2/3;  t=0.5: TP2 FP1 -> 4/5;  t=0.1: 4/6.  Best 0.8, precision 2/3, recall 1.
  // Splitting the tie (defective first) would claim TP2 FP0 -> F1 = 1.
  const F1 r = f1_max(Scores{0.9, 0.5, 0.5, 0.1}, Labels{1, 0, 1, 0});
  EXPECT_NEAR(r.f1, 0.8, kTol);
  EXPECT_EQ(r.threshold, 0.5);
  EXPECT_NEAR(r.precision, 2.0 / 3.0, kTol);
  EXPECT_NEAR(r.recall, 1.0, kTol);
}

TEST(MetricsF1Max, EqualF1KeepsTheHighestThreshold) {
  // 3 defective (9, 5, 1) and 7 good (8 7 6 4 3 2 1.5):
  //   t=9: TP1 FP0 -> 2/4 = 0.5;  t=8,7,6: 2/5, 2/6, 2/7;  t=5: TP2 FP3 -> 4/8 = 0.5;
  //   t=4,3,2,1.5: 4/9..4/12;  t=1: TP3 FP7 -> 6/13 < 0.5.  The tie 0.5 goes to t=9.
  const F1 r = f1_max(Scores{9, 8, 7, 6, 5, 4, 3, 2, 1.5, 1}, Labels{1, 0, 0, 0, 1, 0, 0, 0, 0, 1});
  EXPECT_EQ(r.f1, 0.5);
  EXPECT_EQ(r.threshold, 9.0);
  EXPECT_EQ(r.precision, 1.0);
  EXPECT_NEAR(r.recall, 1.0 / 3.0, kTol);
}

TEST(MetricsF1Max, NanGroupReportsPlusInfThreshold) {
  // NaN and +Inf (both defective) form the top group: TP2 FP0 of 2 -> F1 1 at t = +Inf.
  const F1 r = f1_max(Scores{kNaN, 3, kInf, 1}, Labels{1, 0, 1, 0});
  EXPECT_EQ(r.f1, 1.0);
  EXPECT_EQ(r.threshold, kInf);
}

TEST(MetricsF1Max, AllDefective) {
  // Only defective images: the lowest threshold takes them all, F1 = 1.
  const F1 r = f1_max(Scores{2, 1}, Labels{1, 1});
  EXPECT_EQ(r.f1, 1.0);
  EXPECT_EQ(r.threshold, 1.0);
}

TEST(MetricsF1Max, RejectsBadInput) {
  test::expect_input_error(
      [] {
        f1_max(Scores{1, 2}, Labels{0, 0});
      },
      "f1_max", "no defective images");
  test::expect_input_error([] { f1_max(Scores{1, 2}, Labels{0}); }, "scores (2) and labels (1)");
}

TEST(MetricsF1At, UsesStrictGreaterThan) {
  // score > 0.7 takes 0.9 0.8 0.8 (not 0.7 itself): TP2 FP1 FN1 -> P 2/3, R 2/3, F1 4/6.
  const F1 at07 = f1_at(kF1Scores, kF1Labels, 0.7);
  EXPECT_NEAR(at07.f1, 2.0 / 3.0, kTol);
  EXPECT_NEAR(at07.precision, 2.0 / 3.0, kTol);
  EXPECT_NEAR(at07.recall, 2.0 / 3.0, kTol);
  EXPECT_EQ(at07.threshold, 0.7);
  // score > 0.8 takes 0.9 only; both 0.8s stay out together: TP1 FP0 FN2 -> F1 2/4.
  const F1 at08 = f1_at(kF1Scores, kF1Labels, 0.8);
  EXPECT_NEAR(at08.f1, 0.5, kTol);
  EXPECT_EQ(at08.precision, 1.0);
  EXPECT_NEAR(at08.recall, 1.0 / 3.0, kTol);
  // Any t in [0.3, 0.7) reproduces f1_max's ">= 0.7": TP3 FP1 -> 6/7.
  EXPECT_NEAR(f1_at(kF1Scores, kF1Labels, 0.5).f1, 6.0 / 7.0, kTol);
  EXPECT_NEAR(f1_at(kF1Scores, kF1Labels, 0.3).f1, 6.0 / 7.0, kTol);
}

TEST(MetricsF1At, EmptyPredictionAndEmptyTruthConventions) {
  // Nothing predicted: precision 1 (no false alarm), recall 0, F1 0.
  const F1 none = f1_at(kF1Scores, kF1Labels, 1.0);
  EXPECT_EQ(none.precision, 1.0);
  EXPECT_EQ(none.recall, 0.0);
  EXPECT_EQ(none.f1, 0.0);
  // No defective images and nothing predicted: TP = FP = FN = 0, all 1.
  const F1 clean = f1_at(Scores{0.1, 0.2}, Labels{0, 0}, 0.5);
  EXPECT_EQ(clean.precision, 1.0);
  EXPECT_EQ(clean.recall, 1.0);
  EXPECT_EQ(clean.f1, 1.0);
  // No defective images, one false alarm: precision 0, recall 1 (nothing to miss), F1 0.
  const F1 alarm = f1_at(Scores{0.1, 0.9}, Labels{0, 0}, 0.5);
  EXPECT_EQ(alarm.precision, 0.0);
  EXPECT_EQ(alarm.recall, 1.0);
  EXPECT_EQ(alarm.f1, 0.0);
}

TEST(MetricsF1At, NanIsPredictedDefectiveBelowPlusInf) {
  // NaN (defective) > 1e308 counts as +Inf > 1e308: TP1 of 1, F1 1. At t = +Inf nothing is.
  EXPECT_EQ(f1_at(Scores{kNaN, 0}, Labels{1, 0}, 1e308).f1, 1.0);
  EXPECT_EQ(f1_at(Scores{kNaN, 0}, Labels{1, 0}, kInf).f1, 0.0);
  test::expect_input_error([] { f1_at(Scores{1}, Labels{1}, kNaN); }, "threshold is NaN");
}

// ---------------------------------------------------------------------------------------------
// Connected components
// ---------------------------------------------------------------------------------------------

std::vector<int32_t> components(const std::vector<uint8_t>& mask, int64_t h, int64_t w,
                                int64_t* n) {
  std::vector<int32_t> labels(size_t(h * w), 99);
  *n = label_components_8(mask.data(), h, w, labels.data());
  return labels;
}

TEST(MetricsComponents, DiagonalNeighboursAreOneComponent) {
  // 4-connectivity would give two components here; 8-connectivity gives one.
  int64_t n = 0;
  const auto labels = components({1, 0,  //
                                  0, 1},
                                 2, 2, &n);
  EXPECT_EQ(n, 1);
  EXPECT_EQ(labels, (std::vector<int32_t>{0, -1, -1, 0}));
}

TEST(MetricsComponents, IsolatedCornersAreSeparate) {
  // The four corner pixels of a 3x3: no two touch, not even diagonally.
  int64_t n = 0;
  const auto labels = components({1, 0, 1,  //
                                  0, 0, 0,  //
                                  1, 0, 1},
                                 3, 3, &n);
  EXPECT_EQ(n, 4);
  EXPECT_EQ(labels, (std::vector<int32_t>{0, -1, 1, -1, -1, -1, 2, -1, 3}));
}

TEST(MetricsComponents, RasterOrderAndShapesThatJoinLate) {
  // A "V" that joins at the bottom (one component found from its top-left pixel), and a
  // separate pixel at the far right, found second in raster order.
  int64_t n = 0;
  const auto labels = components({1, 0, 0, 0, 1, 0, 1,  //
                                  0, 1, 0, 1, 0, 0, 0,  //
                                  0, 0, 1, 0, 0, 0, 0},
                                 3, 7, &n);
  EXPECT_EQ(n, 2);
  EXPECT_EQ(labels, (std::vector<int32_t>{0,  -1, -1, -1, 0,  -1, 1,   //
                                          -1, 0,  -1, 0,  -1, -1, -1,  //
                                          -1, -1, 0,  -1, -1, -1, -1}));
}

TEST(MetricsComponents, EmptyAndFullMasks) {
  int64_t n = 0;
  EXPECT_EQ(components({0, 0, 0, 0, 0, 0}, 2, 3, &n), std::vector<int32_t>(6, -1));
  EXPECT_EQ(n, 0);
  EXPECT_EQ(components({1, 1, 1, 1, 1, 1}, 2, 3, &n), std::vector<int32_t>(6, 0));
  EXPECT_EQ(n, 1);
}

// ---------------------------------------------------------------------------------------------
// Pixel AUROC and AUPRO
// ---------------------------------------------------------------------------------------------

// An image with owned storage, and the MapRef views of a set of them.
struct Image {
  std::vector<float> map;
  std::vector<uint8_t> mask;
  int64_t height, width;
};
std::vector<MapRef> refs(const std::vector<Image>& images) {
  std::vector<MapRef> r;
  for (const Image& im : images) r.push_back({im.map.data(), im.mask.data(), im.height, im.width});
  return r;
}

// Two components on image A and an all-good image B:
//   A (2x5) mask   1 1 0 0 0     scores  .9  .4  .8  .3  .2
//                  0 0 0 0 1             .1  .6  .4  .05 .7
//   B (1x3) mask   0 0 0         scores  .6  0   .15
// X = {A(0,0)=.9, A(0,1)=.4} (size 2), Y = {A(1,4)=.7} (size 1); 10 good pixels.
std::vector<Image> two_component_case() {
  return {{{0.9f, 0.4f, 0.8f, 0.3f, 0.2f, 0.1f, 0.6f, 0.4f, 0.05f, 0.7f},
           {1, 1, 0, 0, 0, 0, 0, 0, 0, 1},
           2,
           5},
          {{0.6f, 0.0f, 0.15f}, {0, 0, 0}, 1, 3}};
}
// Its PRO-vs-FPR curve, groups entering from the top (PRO = (X fraction + Y fraction) / 2):
//   start (0, 0)
//   .9  (X)          -> (0,   0.25)
//   .8  (good)       -> (0.1, 0.25)
//   .7  (Y)          -> (0.1, 0.75)
//   .6  (good x2)    -> (0.3, 0.75)
//   .4  (X and good) -> (0.4, 1.0)     then flat at PRO 1 to (1, 1).
// Areas: 0.1*0.25 = 0.025; 0.2*0.75 = 0.15 -> 0.175 at FPR 0.3.

TEST(MetricsAupro, TwoComponentsHandComputed) {
  const auto images = two_component_case();
  // max_fpr 0.3 lands exactly on a point (3/10 == 0.3 in double): 0.175 / 0.3 = 7/12.
  EXPECT_NEAR(aupro(refs(images), 0.3), 7.0 / 12.0, kTol);
  // Default max_fpr is 0.3.
  EXPECT_NEAR(aupro(refs(images)), 7.0 / 12.0, kTol);
  // max_fpr 0.35 cuts segment (0.3, 0.75)-(0.4, 1): PRO(0.35) = 0.875, extra area
  // 0.05 * (0.75 + 0.875) / 2 = 0.040625 -> 0.215625 / 0.35 = 69/112.
  EXPECT_NEAR(aupro(refs(images), 0.35), 69.0 / 112.0, kTol);
  // max_fpr 0.05 cuts the flat segment at PRO 0.25: 0.05 * 0.25 / 0.05 = 0.25.
  EXPECT_NEAR(aupro(refs(images), 0.05), 0.25, kTol);
  // max_fpr 1: 0.175 + 0.1 * (0.75 + 1) / 2 + 0.6 * 1 = 0.8625.
  EXPECT_NEAR(aupro(refs(images), 1.0), 0.8625, kTol);
}

TEST(MetricsPixelMetrics, TwoComponentsHandComputed) {
  // Pixel AUROC: defect .9 beats all 10 good; .7 beats all but .8 (9); .4 beats
  // .3 .2 .15 .1 .05 0 (6) and ties .4 (1/2) -> 25.5 / 30 = 0.85.
  const auto images = two_component_case();
  const PixelMetrics m = pixel_metrics(refs(images));
  EXPECT_NEAR(m.auroc, 0.85, kTol);
  EXPECT_NEAR(m.aupro, 7.0 / 12.0, kTol);
  EXPECT_EQ(m.n_pixels, 13);
  EXPECT_EQ(m.n_good_pixels, 10);
  EXPECT_EQ(m.n_components, 2);
  EXPECT_EQ(pixel_auroc(refs(images)), m.auroc);
  EXPECT_EQ(aupro(refs(images)), m.aupro);
}

TEST(MetricsAupro, DiagonalContactMakesOneRegion) {
  // mask 1 1 0   scores .8 .1 .5     (0,1) and (1,2) touch at a corner.
  //      0 0 1          .4 .3 .9
  // 8-connected: one region of 3. Groups .9, .8 (defect) give PRO 1/3, 2/3 at FPR 0, then
  // the 3 good pixels move FPR to 1 at PRO 2/3: AUPRO = 2/3 for any max_fpr < 1.
  // (4-connected it would be {.8, .1} and {.9}: PRO (0 + 1)/2, then (1/2 + 1)/2 = 0.75.)
  const std::vector<Image> images = {
      {{0.8f, 0.1f, 0.5f, 0.4f, 0.3f, 0.9f}, {1, 1, 0, 0, 0, 1}, 2, 3}};
  EXPECT_NEAR(aupro(refs(images)), 2.0 / 3.0, kTol);
  EXPECT_EQ(pixel_metrics(refs(images)).n_components, 1);
}

TEST(MetricsPixelAuroc, NanTiesPlusInfAndZerosTie) {
  // Defect {NaN, 2} vs good {+Inf, 1}: NaN ties +Inf (1/2), beats 1 (1); 2 beats 1 (1) -> 2.5/4.
  const std::vector<Image> a = {{{kNaNf, kInff, 1, 2}, {1, 0, 0, 1}, 1, 4}};
  EXPECT_NEAR(pixel_auroc(refs(a)), 0.625, kTol);
  const std::vector<Image> z = {{{-0.0f, 0.0f}, {1, 0}, 1, 2}};
  EXPECT_NEAR(pixel_auroc(refs(z)), 0.5, kTol);
}

TEST(MetricsPixelAuroc, NonzeroMaskValuesAreDefects) {
  const std::vector<Image> a = {{{0.1f, 0.9f, 0.5f}, {0, 255, 3}, 1, 3}};
  EXPECT_EQ(pixel_auroc(refs(a)), 1.0);
}

// Several million pixels on 1000 score levels, checked against per-level counting (no sort):
// with G[k], D[k] good and defect pixels at level k, AUROC = sum_k D[k] (G[<k] + G[k]/2) / (G D).
TEST(MetricsPixelAuroc, MillionsOfPixelsMatchLevelCounting) {
  constexpr int kLevels = 1000;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> level(0, kLevels - 1);
  std::vector<Image> images;
  std::vector<double> good(kLevels, 0), defect(kLevels, 0);
  for (int i = 0; i < 3; ++i) {
    Image im{{}, {}, 1000, 1000 + i};  // odd widths
    const int64_t n = im.height * im.width;
    im.map.resize(size_t(n));
    im.mask.resize(size_t(n));
    for (int64_t p = 0; p < n; ++p) {
      const int64_t y = p / im.width, x = p % im.width;
      const bool in_defect = (y - 300 * i - 200) * (y - 300 * i - 200) + (x - 500) * (x - 500) <
                             150 * 150;  // a disc per image
      int k = level(rng);
      if (in_defect) k = std::min(kLevels - 1, k + 300);  // defects score higher, with overlap
      im.map[size_t(p)] = float(k) * 0.001f;
      im.mask[size_t(p)] = in_defect;
      (in_defect ? defect : good)[size_t(k)] += 1;
    }
    images.push_back(std::move(im));
  }
  double wins = 0, good_below = 0, n_good = 0, n_defect = 0;
  for (int k = 0; k < kLevels; ++k) {
    wins += defect[size_t(k)] * (good_below + good[size_t(k)] / 2);
    good_below += good[size_t(k)];
    n_good += good[size_t(k)];
    n_defect += defect[size_t(k)];
  }
  const PixelMetrics m = pixel_metrics(refs(images));
  EXPECT_NEAR(m.auroc, wins / (n_good * n_defect), 1e-12);
  EXPECT_EQ(m.n_pixels, 3000 + 3 * 1000 * 1000);
  EXPECT_EQ(m.n_components, 3);
  EXPECT_GT(m.aupro, 0.0);
  EXPECT_LT(m.aupro, 1.0);
}

TEST(MetricsAupro, PerfectAndInvertedSeparation) {
  // Every defect pixel above every good one: PRO is 1 at FPR 0 -> AUPRO 1 (and AUROC 1).
  // Every good pixel above every defect: PRO stays 0 until FPR 1 -> AUPRO 0 for max_fpr < 1.
  std::vector<Image> im = {{{0.9f, 0.1f, 0.2f, 0.8f, 0.3f, 0.95f}, {1, 0, 0, 1, 0, 1}, 2, 3}};
  const PixelMetrics perfect = pixel_metrics(refs(im));
  EXPECT_EQ(perfect.auroc, 1.0);
  EXPECT_NEAR(perfect.aupro, 1.0, kTol);
  for (float& s : im[0].map) s = -s;
  const PixelMetrics inverted = pixel_metrics(refs(im));
  EXPECT_EQ(inverted.auroc, 0.0);
  EXPECT_EQ(inverted.aupro, 0.0);
}

TEST(MetricsPixelMetrics, RejectsBadInput) {
  const auto images = two_component_case();
  const auto r = refs(images);
  test::expect_input_error([&] { aupro(r, 0.0); }, "max_fpr 0 is not in (0, 1]");
  test::expect_input_error([&] { aupro(r, 1.5); }, "max_fpr");
  test::expect_input_error([&] { pixel_metrics(r, kNaN); }, "max_fpr");
  test::expect_input_error([] { pixel_metrics({}); }, "no anomaly maps");
  std::vector<MapRef> no_mask = r;
  no_mask[1].mask = nullptr;
  test::expect_input_error([&] { pixel_auroc(no_mask); }, "image 1 has no ground-truth mask");
  std::vector<MapRef> no_map = r;
  no_map[0].map = nullptr;
  test::expect_input_error([&] { aupro(no_map); }, "image 0 has no anomaly map");
  std::vector<MapRef> empty = r;
  empty[0].width = 0;
  test::expect_input_error([&] { pixel_metrics(empty); }, "image 0 has an empty size 2x0");

  const std::vector<Image> all_good = {{{0.1f, 0.2f}, {0, 0}, 1, 2}};
  test::expect_input_error([&] { aupro(refs(all_good)); }, "no defect components");
  test::expect_input_error([&] { pixel_auroc(refs(all_good)); }, "no defect pixels");
  const std::vector<Image> all_defect = {{{0.1f, 0.2f}, {1, 1}, 1, 2}};
  test::expect_input_error([&] { aupro(refs(all_defect)); }, "no good pixels");
  test::expect_input_error([&] { pixel_auroc(refs(all_defect)); }, "no good pixels");
}

// ---------------------------------------------------------------------------------------------
// Cleaning
// ---------------------------------------------------------------------------------------------

TEST(MetricsCleaning, CountsAndRates) {
  // 10 images, contaminated {1,2,3}, rejected {2,3,7}: TP {2,3}, FP {7}, FN {1}, TN 6.
  // Precision 2/3, recall 2/3, F1 4/(4+1+1) = 2/3, false rejection rate 1/7 (7 clean images).
  const Cleaning c = cleaning({7, 3, 2}, {1, 2, 3}, 10);
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.fp, 1);
  EXPECT_EQ(c.fn, 1);
  EXPECT_EQ(c.tn, 6);
  EXPECT_NEAR(c.precision, 2.0 / 3.0, kTol);
  EXPECT_NEAR(c.recall, 2.0 / 3.0, kTol);
  EXPECT_NEAR(c.f1, 2.0 / 3.0, kTol);
  EXPECT_EQ(c.false_rejections(), 1);
  EXPECT_NEAR(c.false_rejection_rate, 1.0 / 7.0, kTol);
}

TEST(MetricsCleaning, NothingRejected) {
  // Contaminated {1, 2} of 10, none rejected: precision 1 by convention, recall 0, F1 0.
  const Cleaning c = cleaning({}, {1, 2}, 10);
  EXPECT_EQ(c.fn, 2);
  EXPECT_EQ(c.tn, 8);
  EXPECT_EQ(c.precision, 1.0);
  EXPECT_EQ(c.recall, 0.0);
  EXPECT_EQ(c.f1, 0.0);
  EXPECT_EQ(c.false_rejection_rate, 0.0);
}

TEST(MetricsCleaning, ZeroContamination) {
  // r = 0, two of 20 clean images rejected: precision 0, recall 1 (nothing to find), F1 0;
  // the figure that matters: 2 false rejections, rate 2/20.
  const Cleaning c = cleaning({4, 5}, {}, 20);
  EXPECT_EQ(c.fp, 2);
  EXPECT_EQ(c.tn, 18);
  EXPECT_EQ(c.precision, 0.0);
  EXPECT_EQ(c.recall, 1.0);
  EXPECT_EQ(c.f1, 0.0);
  EXPECT_EQ(c.false_rejections(), 2);
  EXPECT_NEAR(c.false_rejection_rate, 0.1, kTol);
  // r = 0 and nothing rejected: perfect agreement.
  const Cleaning none = cleaning({}, {}, 20);
  EXPECT_EQ(none.precision, 1.0);
  EXPECT_EQ(none.recall, 1.0);
  EXPECT_EQ(none.f1, 1.0);
  EXPECT_EQ(none.false_rejection_rate, 0.0);
}

TEST(MetricsCleaning, AllContaminatedHasNoCleanImages) {
  const Cleaning c = cleaning({0}, {0, 1}, 2);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.fn, 1);
  EXPECT_EQ(c.false_rejection_rate, 0.0);
  EXPECT_NEAR(c.f1, 2.0 / 3.0, kTol);  // 2 / (2 + 0 + 1)
}

TEST(MetricsCleaning, RejectsBadInput) {
  test::expect_input_error([] { cleaning({10}, {}, 10); }, "rejected id 10 is not in [0, 10)");
  test::expect_input_error([] { cleaning({}, {-1}, 10); }, "contaminated id -1");
  test::expect_input_error([] { cleaning({3, 3}, {}, 10); }, "rejected id 3 is listed twice");
  test::expect_input_error([] { cleaning({}, {}, 0); }, "n_total is 0");
}

}  // namespace
}  // namespace mirad::metrics
