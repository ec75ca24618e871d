// Nearest-training-patch baseline and rank-based AUROC for checking generated benchmarks.
#include "tools/synth/synth_baseline.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.h"
#include "host/resize.h"
#include "host/thread_pool.h"

namespace mirad::synth {

double auroc(std::span<const double> scores, std::span<const uint8_t> positive) {
  CHECK_INPUT(scores.size() == positive.size(), "auroc: {} scores but {} labels", scores.size(),
              positive.size());
  for (double s : scores) CHECK_INPUT(!std::isnan(s), "auroc: NaN score");
  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  // Mann-Whitney: the positives' rank sum, tied runs sharing their mean rank.
  double rank_sum = 0, n_pos = 0;
  for (std::size_t i = 0; i < order.size();) {
    std::size_t j = i;
    while (j < order.size() && scores[order[j]] == scores[order[i]]) ++j;
    const double midrank = 0.5 * static_cast<double>(i + 1 + j);  // mean of ranks i+1..j
    for (std::size_t k = i; k < j; ++k)
      if (positive[order[k]]) rank_sum += midrank, n_pos += 1;
    i = j;
  }
  const double n_neg = static_cast<double>(scores.size()) - n_pos;
  if (n_pos == 0 || n_neg == 0) return std::numeric_limits<double>::quiet_NaN();
  return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
}

int feature_dim(const PatchKnnOptions& opt) { return opt.patch * opt.patch + 2; }

std::vector<float> patch_features(const Image& image, const PatchKnnOptions& opt,
                                  int* n_patches) {
  CHECK_INPUT(opt.downsample >= 1 && opt.patch >= 2 && opt.stride >= 1,
              "patch baseline: bad options (downsample {}, patch {}, stride {})", opt.downsample,
              opt.patch, opt.stride);
  const int h = image.height(), w = image.width();
  Image gray(h, w, 1, PixelType::f32);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      gray.f32()[static_cast<std::size_t>(y) * w + x] =
          image.channels() == 1 ? image.at(y, x, 0)
                                : 0.299f * image.at(y, x, 0) + 0.587f * image.at(y, x, 1) +
                                      0.114f * image.at(y, x, 2);
  const int gh = std::max(1, h / opt.downsample), gw = std::max(1, w / opt.downsample);
  if (gh != h || gw != w) gray = resize_bilinear(gray, gh, gw);
  CHECK_INPUT(gh >= opt.patch && gw >= opt.patch,
              "patch baseline: image {}x{} is too small for {}-px patches after /{} downsampling",
              w, h, opt.patch, opt.downsample);
  const int ny = (gh - opt.patch) / opt.stride + 1, nx = (gw - opt.patch) / opt.stride + 1;
  const int dim = feature_dim(opt), pp = opt.patch * opt.patch;
  std::vector<float> out(static_cast<std::size_t>(nx) * ny * dim);
  const float* g = gray.f32();
  for (int py = 0; py < ny; ++py)
    for (int px = 0; px < nx; ++px) {
      float* f = out.data() + (static_cast<std::size_t>(py) * nx + px) * dim;
      double sum = 0, sum2 = 0;
      for (int y = 0; y < opt.patch; ++y)
        for (int x = 0; x < opt.patch; ++x) {
          const double v = g[static_cast<std::size_t>(py * opt.stride + y) * gw + px * opt.stride + x] / 255.0;
          f[y * opt.patch + x] = static_cast<float>(v);
          sum += v, sum2 += v * v;
        }
      const double mean = sum / pp, sd = std::sqrt(std::max(0.0, sum2 / pp - mean * mean));
      for (int i = 0; i < pp; ++i) f[i] -= static_cast<float>(mean);
      f[pp] = static_cast<float>(mean * opt.patch);
      f[pp + 1] = static_cast<float>(sd * opt.patch);
    }
  if (n_patches) *n_patches = nx * ny;
  return out;
}

BaselineResult evaluate_patch_knn(const Dataset& dataset, const PatchKnnOptions& opt,
                                  ThreadPool& pool) {
  CHECK_INPUT(!dataset.train.empty() && !dataset.test.empty(),
              "patch baseline: needs training and test images");
  const int dim = feature_dim(opt);
  auto features_of = [&](const std::vector<Item>& items) {
    std::vector<std::vector<float>> f(items.size());
    pool.parallel_for(items.size(),
                      [&](std::size_t i) { f[i] = patch_features(decode_image(items[i].path), opt); });
    return f;
  };
  const auto train_f = features_of(dataset.train);
  const auto test_f = features_of(dataset.test);

  std::vector<float> bank;
  for (const auto& f : train_f) bank.insert(bank.end(), f.begin(), f.end());
  const int64_t n_bank = static_cast<int64_t>(bank.size() / dim);
  std::vector<float> bank_norm(n_bank);
  for (int64_t j = 0; j < n_bank; ++j) {
    double s = 0;
    for (int d = 0; d < dim; ++d) s += double(bank[j * dim + d]) * bank[j * dim + d];
    bank_norm[j] = static_cast<float>(s);
  }

  BaselineResult r;
  r.n_train_patches = n_bank;
  r.scores.resize(dataset.test.size());
  // |q - t|^2 = |q|^2 + |t|^2 - 2 q.t, the cross term by GEMM over one test image at a time.
  std::vector<float> cross;
  for (std::size_t i = 0; i < test_f.size(); ++i) {
    const auto& q = test_f[i];
    const int m = static_cast<int>(q.size() / dim);
    cross.resize(static_cast<std::size_t>(m) * n_bank);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, static_cast<int>(n_bank), dim, 1.f,
                q.data(), dim, bank.data(), dim, 0.f, cross.data(), static_cast<int>(n_bank));
    double worst = 0;
    for (int a = 0; a < m; ++a) {
      double qn = 0;
      for (int d = 0; d < dim; ++d) qn += double(q[a * dim + d]) * q[a * dim + d];
      float best = std::numeric_limits<float>::max();
      const float* row = cross.data() + static_cast<std::size_t>(a) * n_bank;
      for (int64_t j = 0; j < n_bank; ++j) best = std::min(best, bank_norm[j] - 2 * row[j]);
      worst = std::max(worst, std::sqrt(std::max(0.0, qn + best)));
    }
    r.scores[i] = worst;
  }
  r.labels.resize(dataset.test.size());
  for (std::size_t i = 0; i < dataset.test.size(); ++i)
    r.labels[i] = dataset.test[i].label == Label::defect;
  r.image_auroc = auroc(r.scores, r.labels);
  std::map<std::string, std::vector<std::size_t>> by_type;
  for (std::size_t i = 0; i < dataset.test.size(); ++i)
    if (dataset.test[i].label == Label::defect) by_type[dataset.test[i].defect_type].push_back(i);
  for (const auto& [type, idx] : by_type) {
    std::vector<double> s;
    std::vector<uint8_t> l;
    for (std::size_t i = 0; i < dataset.test.size(); ++i)
      if (dataset.test[i].label == Label::good) s.push_back(r.scores[i]), l.push_back(0);
    for (std::size_t i : idx) s.push_back(r.scores[i]), l.push_back(1);
    r.per_defect_auroc[type] = auroc(s, l);
  }
  return r;
}

}  // namespace mirad::synth
