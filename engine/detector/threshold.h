// Thresholds, in one home: the rejection rules (the threshold tau above which a training
// image's score marks it as a contaminant, DESIGN.md §4), the decision threshold of the shipped
// detector (§6) and the IQR fence both start from. Rejection rules: "iqr" is the paper's Q3 + k*IQR; it breaks down once about a quarter of the set
// is contaminated (Q3 lands among the contaminants). "mad" is median + k * 1.4826 * MAD, which
// holds until the median moves. "gmm" fits a two-component Gaussian mixture to the scores and
// cuts where the upper component becomes the more likely one, but only when the data favour two
// components (BIC) and they are well separated; otherwise it falls back to Q3 + k*IQR.
// "adjusted" is Hubert & Vandervieren's (2008) skew-adjusted boxplot, Q3 + k*exp(3*MC)*IQR for
// medcouple MC >= 0 (exp(4*MC) below 0): right-skewed clean scores, which the symmetric rule
// peels a few at a time round after round, get a fence as far out as their tail.
#pragma once

#include <string>
#include <vector>

#include "engine/config/detector_config.h"
#include "kernels/quantiles.h"

namespace mirad {

// The IQR fence Q3 + k*IQR (the paper's iqr_k, default 1.5): the "iqr" rejection rule and the
// "iqr" decision threshold. Infinite when Q3 is (the IQR of quartiles at one infinity is 0).
double iqr_fence(const QuartileStats& q, double k);

struct RejectionThreshold {
  double tau = 0;
  std::string detail;  // how tau was found, for the report ("Q3 + 1.5*IQR = ...")
};

// The threshold from the finite scores (non-finite ones are rejected on their own and must be
// left out by the caller). InputError for no scores.
RejectionThreshold rejection_threshold(const std::vector<double>& finite_scores,
                                       RejectionRule rule, double k);

// The decision threshold from calibration scores (DESIGN.md §6): the IQR fence ("iqr") or the
// 1 - target_fpr quantile ("fpr") of the finite scores; detail, if given, says how it was found.
// InputError when no score is finite.
double decision_threshold(const std::vector<double>& scores, const ThresholdSettings& t,
                          std::string* detail = nullptr);

// The medcouple (Brys, Hubert & Struyf 2004): a robust skewness in [-1, 1], the median of
// ((x_j - m) - (m - x_i)) / (x_j - x_i) over pairs x_i <= m <= x_j (m the median); 25%
// breakdown. Above 4096 values it is taken on 4096 evenly spaced order statistics, which keep
// the shape, so the cost stays O(4096^2 / 4). Exposed for tests.
double medcouple(const std::vector<double>& x);

// A two-component 1-D Gaussian mixture, fitted by EM (exposed for tests).
struct Mixture2 {
  double weight[2] = {0.5, 0.5}, mean[2] = {0, 0}, sd[2] = {1, 1};
  double log_likelihood = 0;
  int iterations = 0;
};
Mixture2 fit_mixture2(const std::vector<double>& x, int max_iterations = 500);

}  // namespace mirad
