// A deliberately simple anomaly baseline (nearest training patch in a raw-pixel feature space)
// and a rank-based AUROC, to check that generated benchmarks are not trivially easy.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "host/dataset.h"
#include "host/image.h"

namespace mirad {

class ThreadPool;

namespace synth {

// Area under the ROC curve of `scores` for the items flagged in `positive`: the probability
// that a positive outscores a negative, ties counting one half, computed from midranks.
// NaN when either class is empty; InputError for a length mismatch or a NaN score.
double auroc(std::span<const double> scores, std::span<const uint8_t> positive);

// Patch features: the image in grayscale (ITU-R 601 luma), shrunk by `downsample` with the
// antialiasing resize, cut into patch x patch windows every `stride` pixels (windows lie fully
// inside, so there is no padding). Each window gives its mean-subtracted pixels (0..1 scale)
// plus its mean and standard deviation, both weighted by `patch` so that a uniform brightness
// shift costs as much as it would on the raw pixels.
struct PatchKnnOptions {
  int downsample = 4;
  int patch = 8;
  int stride = 4;
};
// Row-major n_patches x feature_dim(opt).
std::vector<float> patch_features(const Image& image, const PatchKnnOptions& opt,
                                  int* n_patches = nullptr);
int feature_dim(const PatchKnnOptions& opt);

struct BaselineResult {
  std::vector<double> scores;   // per test item, in dataset order
  std::vector<uint8_t> labels;  // 1 = defect
  double image_auroc = 0;
  std::map<std::string, double> per_defect_auroc;  // each defect type against the good items
  int64_t n_train_patches = 0;
};

// Image score = the largest, over the test image's patches, of the Euclidean distance to the
// nearest training patch (any position). Training items are taken as good, whatever their
// label. Distances come from one GEMM per block of test patches (OpenBLAS).
BaselineResult evaluate_patch_knn(const Dataset& dataset, const PatchKnnOptions& opt,
                                  ThreadPool& pool);

}  // namespace synth
}  // namespace mirad
