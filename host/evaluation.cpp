// Test-split evaluation: predictions with maps, masks decoded at their own size, metrics.
#include "host/evaluation.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <set>
#include <string>

#include "core/error.h"
#include "engine/io/json_io.h"
#include "engine/io/json_number.h"
#include "engine/detector/metrics.h"
#include "host/image.h"
#include "kernels/map_ops.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

// A mask is ground truth for its image at the mask's own resolution, so it must picture the same
// scene and say one thing per pixel (issue 13, finding 17: a mask of another aspect ratio, or of
// grey levels, was accepted silently and pixel AUROC fell from 0.911 to 0.677). Refused, not
// repaired: a rule such as "threshold at 128" would erase 0/1 masks, and a stretched mask has
// no right answer.
void check_mask(const Image& mask, const fs::path& mask_path, const Prediction& p) {
  const int mh = mask.height(), mw = mask.width();
  // The same shape up to rounding: a mask resized by s has mh = round(s * h), mw = round(s * w),
  // so the two scales differ by at most a pixel's worth at either resolution.
  const double sh = double(mh) / p.height, sw = double(mw) / p.width;
  const double slack = std::max(1.0, std::max(sh, sw)) / std::min(p.height, p.width) +
                       1.0 / std::min(mh, mw);
  CHECK_INPUT(std::abs(sh - sw) <= slack,
              "eval: mask {} is {}x{}, of another aspect ratio than its image {} ({}x{}): it "
              "cannot be its ground truth", printable(mask_path.string()), mw, mh,
              printable(p.path.string()), p.width, p.height);
  // Binary: 0 for good pixels and one other level for defects (255 in MVTec AD, 1 in some
  // datasets). JPEG-compressed or grey masks hold more.
  std::array<bool, 256> seen{};
  const uint8_t* v = mask.u8();
  for (size_t i = 0, n = size_t(mh) * size_t(mw); i < n; ++i) seen[v[i]] = true;
  std::vector<int> levels;
  for (int l = 0; l < 256; ++l)
    if (seen[l]) levels.push_back(l);
  if (levels.size() <= 1 || (levels.size() == 2 && levels[0] == 0)) return;
  std::string shown;
  for (size_t i = 0; i < levels.size() && i < 6; ++i) shown += (i ? ", " : "") + std::to_string(levels[i]);
  if (levels.size() > 6) shown += ", ...";
  throw InputError(fmt::format(
      "eval: mask {} is not binary: it holds {} gray levels ({}); a mask is 0 for good pixels "
      "and one other value (255, or 1) for defect pixels", printable(mask_path.string()),
      levels.size(), shown));
}

EvalMetrics compute(const std::vector<Item>& items, const std::vector<Prediction>& preds,
                    const std::vector<size_t>& which, double threshold) {
  EvalMetrics m;
  std::vector<double> scores;
  std::vector<uint8_t> labels;
  std::vector<std::string> types;
  // Pixel data: the map at the mask's resolution, and the mask (all zero for good images).
  std::vector<std::vector<float>> maps;
  std::vector<std::vector<uint8_t>> masks;
  std::vector<std::pair<int64_t, int64_t>> dims;  // (height, width) of each map/mask pair
  bool any_mask = false;
  for (size_t i : which) {
    const Prediction& p = preds[i];
    if (!p.error.empty()) {
      ++m.failed;
      continue;
    }
    const Item& it = items[i];
    const bool defect = it.label == Label::defect;
    scores.push_back(p.score);
    labels.push_back(defect ? 1 : 0);
    types.push_back(it.defect_type);
    ++m.images;
    (defect ? m.defect : m.good) += 1;
    if (defect && it.mask_path.empty()) continue;
    if (p.map.empty()) continue;
    int mh = p.height, mw = p.width;
    std::vector<uint8_t> mask(size_t(mh) * mw, 0);
    if (!it.mask_path.empty()) {
      DecodeOptions o;
      o.color = ColorMode::gray;
      Image mimg = decode_image(it.mask_path, o);
      check_mask(mimg, it.mask_path, p);
      mh = mimg.height(), mw = mimg.width();
      mask.assign(mimg.u8(), mimg.u8() + size_t(mh) * mw);
      for (auto& v : mask) v = v > 0 ? 1 : 0;
      ++m.masks;
      any_mask = true;
    }
    std::vector<float> map = p.map;
    if (mh != p.height || mw != p.width) {
      map.resize(size_t(mh) * mw);
      mapops::resize_bilinear(1, p.height, p.width, p.map.data(), mh, mw, map.data(), Device::cpu);
    }
    maps.push_back(std::move(map));
    masks.push_back(std::move(mask));
    dims.push_back({mh, mw});
  }
  if (m.good > 0 && m.defect > 0) {
    m.image_auroc = metrics::auroc(scores, labels);
    const auto best = metrics::f1_max(scores, labels);
    m.f1_max = best.f1, m.f1_max_threshold = best.threshold;
    const auto at = metrics::f1_at(scores, labels, threshold);
    m.f1_at_threshold = at.f1, m.precision_at_threshold = at.precision;
    m.recall_at_threshold = at.recall;
    std::set<std::string> kinds;
    for (size_t j = 0; j < types.size(); ++j)
      if (labels[j]) kinds.insert(types[j]);
    for (const auto& k : kinds) {
      std::vector<double> s;
      std::vector<uint8_t> l;
      for (size_t j = 0; j < types.size(); ++j)
        if (!labels[j] || types[j] == k) s.push_back(scores[j]), l.push_back(labels[j]);
      m.auroc_by_defect[k] = metrics::auroc(s, l);
    }
  }
  if (m.good > 0) {
    int64_t above = 0;
    for (size_t j = 0; j < scores.size(); ++j)
      if (!labels[j] && !(scores[j] <= threshold)) ++above;
    m.good_fpr_at_threshold = double(above) / double(m.good);
  }
  if (any_mask) {
    bool has_good_pixel = false, has_defect_pixel = false;
    for (const auto& mk : masks)
      for (uint8_t v : mk) (v ? has_defect_pixel : has_good_pixel) = true;
    if (has_good_pixel && has_defect_pixel) {
      std::vector<metrics::MapRef> refs;
      for (size_t j = 0; j < maps.size(); ++j)
        refs.push_back({maps[j].data(), masks[j].data(), dims[j].first, dims[j].second});
      const auto pm = metrics::pixel_metrics(refs, 0.3);
      m.pixel_auroc = pm.auroc, m.aupro = pm.aupro;
    }
  }
  return m;
}

}  // namespace

nlohmann::json EvalMetrics::to_json() const {
  nlohmann::json by = nlohmann::json::object();
  for (const auto& [k, v] : auroc_by_defect) by[k] = json_number(v);
  return {{"images", images},
          {"good", good},
          {"defect", defect},
          {"masks", masks},
          {"failed", failed},
          {"image_auroc", json_number(image_auroc)},
          {"pixel_auroc", json_number(pixel_auroc)},
          {"aupro", json_number(aupro)},
          {"aupro_max_fpr", 0.3},
          {"f1_max", json_number(f1_max)},
          {"f1_max_threshold", json_number(f1_max_threshold)},
          {"f1_at_threshold", json_number(f1_at_threshold)},
          {"precision_at_threshold", json_number(precision_at_threshold)},
          {"recall_at_threshold", json_number(recall_at_threshold)},
          {"good_fpr_at_threshold", json_number(good_fpr_at_threshold)},
          {"auroc_by_defect", by},
          {"eval_resolution", eval_resolution}};
}

EvalReport evaluate(const Predictor& predictor, const std::vector<Item>& test,
                    const std::vector<fs::path>& subset, bool strict,
                    const JobProgress& progress) {
  const auto t0 = std::chrono::steady_clock::now();
  CHECK_INPUT(!test.empty(), "evaluation: the test split is empty");
  EvalReport r;
  r.items = test;
  r.threshold = predictor.model().threshold;
  std::vector<fs::path> paths;
  for (const Item& it : test) paths.push_back(it.path);
  r.predictions = predictor.predict(paths, true, strict, progress);
  std::vector<size_t> all(test.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = i;
  r.all = compute(test, r.predictions, all, r.threshold);
  if (!subset.empty()) {
    std::set<std::string> want;
    for (const auto& p : subset) want.insert(fs::weakly_canonical(p).string());
    std::vector<size_t> pick;
    for (size_t i = 0; i < test.size(); ++i)
      if (want.count(fs::weakly_canonical(test[i].path).string())) pick.push_back(i);
    CHECK_INPUT(pick.size() == want.size(),
                "evaluation: {} of the {} subset images are not in the test split",
                want.size() - pick.size(), want.size());
    r.subset = compute(test, r.predictions, pick, r.threshold);
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace mirad
