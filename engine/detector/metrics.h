// Evaluation metrics of a detector (host-side, exact): image AUROC and F1, pixel AUROC, AUPRO
// (DESIGN.md §7) and the cleaning metrics of a rejected-image set.
//
// Rules shared by every metric here:
// - Labels and masks: nonzero = defective / defect pixel (positive class), 0 = good.
// - Larger scores are more anomalous. NaN and +Inf scores are the most anomalous there are
//   (DESIGN.md §4: a non-finite score is rejected, never a crash): NaN ranks with +Inf, above
//   every finite score, and NaN, +Inf and each other tie. -Inf ranks below every finite
//   score. -0.0 and +0.0 tie.
// - Ties are exact: equal scores form one group that is predicted defective or good as a
//   whole. AUROC gives a tied (defective, good) pair half credit; a curve (AUPRO) moves from
//   one group to the next in one straight segment.
// - Counting is done in integers and every ratio is formed once at the end, so results do not
//   depend on the order of the inputs.
// - Bad input (empty arrays, unequal sizes, a missing class, max_fpr outside (0, 1]) throws
//   InputError naming the problem.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace mirad::metrics {

// Image AUROC: the Mann-Whitney probability that a defective image outscores a good one, ties
// counted 1/2 (equals scikit-learn's roc_auc_score). Needs both classes.
double auroc(std::span<const double> scores, std::span<const uint8_t> labels);

// Precision/recall/F1 conventions (shared with `cleaning`):
//   precision = TP/(TP+FP), and 1 when nothing is predicted defective (no false alarm made);
//   recall    = TP/(TP+FN), and 1 when nothing is defective (nothing missed);
//   F1        = 2TP/(2TP+FP+FN), and 1 when TP+FP+FN = 0 (prediction and truth agree).
// F1 is then the harmonic mean of precision and recall, taken as 0 when both are 0, in every
// case, the edge cases included.
struct F1 {
  double f1 = 0, threshold = 0, precision = 0, recall = 0;
};

// The best F1 over the thresholds t at every distinct score, with the rule "score >= t" (as
// scikit-learn's precision_recall_curve): `threshold` is therefore a score value, the lowest
// one predicted defective (+Inf when the best group is the NaN/+Inf one). Among equal F1 the
// highest threshold (fewest images predicted defective) wins; F1 values are compared exactly as
// rationals. Needs at least one defective image.
F1 f1_max(std::span<const double> scores, std::span<const uint8_t> labels);

// F1 at a given decision threshold with the design's rule "score > threshold" (DESIGN.md §6):
// strict, unlike f1_max's ">=". So f1_at(s, l, f1_max(s, l).threshold) does NOT reproduce
// f1_max in general (the threshold's own group is left out); any t between the best threshold
// and the next lower distinct score does. NaN scores count as +Inf, so they are predicted
// defective at every threshold but +Inf. A NaN threshold is an InputError.
F1 f1_at(std::span<const double> scores, std::span<const uint8_t> labels, double threshold);

// One test image for the pixel metrics: an anomaly map and its ground-truth mask, both
// row-major height x width, contiguous; mask nonzero = defect. Neither is owned.
struct MapRef {
  const float* map = nullptr;
  const uint8_t* mask = nullptr;
  int64_t height = 0, width = 0;
};

struct PixelMetrics {
  double auroc = 0, aupro = 0;
  int64_t n_pixels = 0, n_good_pixels = 0, n_components = 0;
};

// Pixel AUROC over all pixels of all images (one global ranking, same rules as `auroc`).
// Needs both good and defect pixels.
double pixel_auroc(std::span<const MapRef> maps);

// AUPRO (DESIGN.md §7), computed exactly:
// - The regions are the 8-connected components of each image's mask (label_components_8);
//   a good image's all-zero mask has none.
// - At threshold t a pixel is predicted defective when score > t. FPR(t) = the fraction of all
//   good pixels of all images predicted defective; PRO(t) = the mean over all components of
//   all images of the fraction of the component's pixels predicted defective (each component
//   weighs the same, whatever its size).
// - The curve's points are t = every distinct score, from the highest down, then t = -Inf:
//   (0, 0), then one point after each group of equal scores enters, ending at (1, 1).
//   Consecutive points are joined by straight lines (several points may share an FPR).
// - AUPRO = (area under PRO(FPR) from FPR 0 to max_fpr, trapezoid rule on those points; the
//   segment crossing max_fpr is cut there by linear interpolation) / max_fpr, in [0, 1].
// Needs at least one defect component and one good pixel; max_fpr in (0, 1].
double aupro(std::span<const MapRef> maps, double max_fpr = 0.3);

// Both pixel metrics from one sort of all pixels, with the counts behind them.
PixelMetrics pixel_metrics(std::span<const MapRef> maps, double max_fpr = 0.3);

// Labels the 8-connected components of the nonzero pixels of a row-major h x w mask: labels_out
// (h*w entries) gets -1 for background and 0..n-1 for component pixels, numbered in raster
// order of each component's first pixel. Returns n. Pixels touching only at a corner are
// connected (a diagonal pair is one component).
int64_t label_components_8(const uint8_t* mask, int64_t height, int64_t width, int32_t* labels_out);

// Cleaning metrics of a cleaner's rejected set against the truly contaminated set, over image
// ids in [0, n_total). Positive = rejected / contaminated; precision, recall and f1 follow the
// conventions above (so rejecting nothing gives precision 1, and at contamination 0 with
// nothing rejected every figure is 1). At contamination 0 the useful figures are the false
// rejections: false_rejection_rate = FP / number of clean images (0 when there are none).
// Ids must be in range and unique within each list.
struct Cleaning {
  int64_t tp = 0, fp = 0, fn = 0, tn = 0;
  double precision = 0, recall = 0, f1 = 0, false_rejection_rate = 0;
  int64_t false_rejections() const { return fp; }
};
Cleaning cleaning(const std::vector<int64_t>& rejected, const std::vector<int64_t>& contaminated,
                  int64_t n_total);

}  // namespace mirad::metrics
