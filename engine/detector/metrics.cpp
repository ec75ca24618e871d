// Exact evaluation metrics: ranking by sorted keys, tie groups, integer counts (see metrics.h).
#include "engine/detector/metrics.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>

#include "core/error.h"

namespace mirad::metrics {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// The score as it is ranked: NaN joins +Inf (the most anomalous), -0.0 joins +0.0.
double rank_value(double s) {
  if (std::isnan(s)) return kInf;
  return s == 0 ? 0.0 : s;
}

// Sum with Neumaier's compensation: the AUPRO sweep adds millions of small terms, and a plain
// sum's error would grow with the pixel count.
class CompensatedSum {
 public:
  void add(double x) {
    const double t = m_sum + x;
    m_carry += std::abs(m_sum) >= std::abs(x) ? (m_sum - t) + x : (x - t) + m_sum;
    m_sum = t;
  }
  double value() const { return m_sum + m_carry; }

 private:
  double m_sum = 0, m_carry = 0;
};

// ---------------------------------------------------------------------------------------------
// Image-level metrics
// ---------------------------------------------------------------------------------------------

struct ScoredImage {
  double value;  // rank_value of the score
  bool defective;
};

void check_image_inputs(const char* what, std::span<const double> scores,
                        std::span<const uint8_t> labels) {
  CHECK_INPUT(scores.size() == labels.size(), "{}: scores ({}) and labels ({}) differ in length",
              what, scores.size(), labels.size());
  CHECK_INPUT(!scores.empty(), "{}: no scores given", what);
}

// The images sorted by ascending rank value; ties keep no particular order.
std::vector<ScoredImage> ranked_images(std::span<const double> scores,
                                       std::span<const uint8_t> labels) {
  std::vector<ScoredImage> images(scores.size());
  for (size_t i = 0; i < scores.size(); ++i) images[i] = {rank_value(scores[i]), labels[i] != 0};
  std::sort(images.begin(), images.end(),
            [](const ScoredImage& a, const ScoredImage& b) { return a.value < b.value; });
  return images;
}

// Precision, recall and F1 from counts, with the conventions of metrics.h for empty sets.
F1 make_f1(int64_t tp, int64_t fp, int64_t fn, double threshold) {
  F1 r;
  r.threshold = threshold;
  r.precision = tp + fp == 0 ? 1.0 : double(tp) / double(tp + fp);
  r.recall = tp + fn == 0 ? 1.0 : double(tp) / double(tp + fn);
  r.f1 = tp + fp + fn == 0 ? 1.0 : double(2 * tp) / double(2 * tp + fp + fn);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Pixel-level metrics: every pixel becomes one uint64, sorted once.
//   high 32 bits: an order-preserving key of its float score (unsigned comparison of the keys
//                 ranks the scores, with the NaN and zero rules);
//   low 32 bits:  0 for a good pixel, else 1 + the global id of its mask component (or just 1
//                 when components are not needed).
// Eight bytes a pixel, and a group of equal scores is a run of equal high halves.
// ---------------------------------------------------------------------------------------------

uint32_t score_key(float s) {
  const uint32_t bits = std::bit_cast<uint32_t>(float(rank_value(s)));
  // Negative floats order backwards as integers: flip them all; put positives above them.
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
uint32_t key_of(uint64_t pixel) {
  return uint32_t(pixel >> 32);
}
uint32_t region_of(uint64_t pixel) {
  return uint32_t(pixel);
}

struct RankedPixels {
  std::vector<uint64_t> pixels;          // sorted ascending
  std::vector<int64_t> component_sizes;  // empty unless components were labelled
  int64_t n_good = 0, n_defect = 0;
};

void check_maps(const char* what, std::span<const MapRef> maps) {
  CHECK_INPUT(!maps.empty(), "{}: no anomaly maps given", what);
  for (size_t i = 0; i < maps.size(); ++i) {
    const MapRef& m = maps[i];
    CHECK_INPUT(m.map != nullptr, "{}: image {} has no anomaly map", what, i);
    CHECK_INPUT(m.mask != nullptr, "{}: image {} has no ground-truth mask", what, i);
    CHECK_INPUT(m.height > 0 && m.width > 0, "{}: image {} has an empty size {}x{}", what, i,
                m.height, m.width);
  }
}

void check_max_fpr(double max_fpr) {
  CHECK_INPUT(max_fpr > 0 && max_fpr <= 1, "aupro: max_fpr {} is not in (0, 1]", max_fpr);
}

RankedPixels rank_pixels(std::span<const MapRef> maps, bool with_components) {
  RankedPixels r;
  int64_t total = 0;
  for (const MapRef& m : maps) total += m.height * m.width;
  r.pixels.reserve(size_t(total));
  std::vector<int32_t> labels;
  for (const MapRef& m : maps) {
    const int64_t n = m.height * m.width;
    int64_t first_component = int64_t(r.component_sizes.size());
    if (with_components) {
      labels.resize(size_t(n));
      const int64_t n_components = label_components_8(m.mask, m.height, m.width, labels.data());
      r.component_sizes.resize(size_t(first_component + n_components), 0);
      CHECK_INPUT(r.component_sizes.size() < 0xFFFFFFFFu, "aupro: more than 2^32-2 components");
    }
    for (int64_t p = 0; p < n; ++p) {
      uint32_t region = 0;
      if (m.mask[p] != 0) {
        ++r.n_defect;
        region = 1;
        if (with_components) {
          const int64_t c = first_component + labels[size_t(p)];
          ++r.component_sizes[size_t(c)];
          region = uint32_t(c + 1);
        }
      } else {
        ++r.n_good;
      }
      r.pixels.push_back(uint64_t(score_key(m.map[p])) << 32 | region);
    }
  }
  std::sort(r.pixels.begin(), r.pixels.end());
  return r;
}

// Mann-Whitney over the ascending pixels: each defect pixel scores 1 for every good pixel in a
// lower group and 1/2 for every good pixel in its own group. Counted doubled, in integers.
double auroc_of_ranked(const RankedPixels& r) {
  unsigned __int128 twice_wins = 0;
  uint64_t good_below = 0;
  for (size_t i = 0; i < r.pixels.size();) {
    const uint32_t key = key_of(r.pixels[i]);
    uint64_t defect = 0, good = 0;
    for (; i < r.pixels.size() && key_of(r.pixels[i]) == key; ++i)
      ++(region_of(r.pixels[i]) != 0 ? defect : good);
    twice_wins += (unsigned __int128)(2 * good_below + good) * defect;
    good_below += good;
  }
  return double(twice_wins) / (2.0 * double(r.n_good) * double(r.n_defect));
}

// The PRO-vs-FPR sweep of metrics.h: groups enter from the highest score down; each entering
// good pixel adds 1/n_good to FPR, each entering component pixel 1/size to its component's
// overlap (so PRO = sum / n_components).
double aupro_of_ranked(const RankedPixels& r, double max_fpr) {
  std::vector<double> pixel_weight(r.component_sizes.size());
  for (size_t c = 0; c < pixel_weight.size(); ++c)
    pixel_weight[c] = 1.0 / double(r.component_sizes[c]);
  const double n_components = double(r.component_sizes.size());

  CompensatedSum overlap, area;
  int64_t false_positives = 0;
  double fpr0 = 0, pro0 = 0;
  for (size_t i = r.pixels.size(); i > 0;) {
    const uint32_t key = key_of(r.pixels[i - 1]);
    for (; i > 0 && key_of(r.pixels[i - 1]) == key; --i) {
      const uint32_t region = region_of(r.pixels[i - 1]);
      if (region == 0)
        ++false_positives;
      else
        overlap.add(pixel_weight[region - 1]);
    }
    const double fpr1 = double(false_positives) / double(r.n_good);
    const double pro1 = overlap.value() / n_components;
    if (fpr1 >= max_fpr) {
      // fpr0 < max_fpr <= fpr1, so the segment is not vertical: cut it at max_fpr.
      const double pro_at = pro0 + (pro1 - pro0) * ((max_fpr - fpr0) / (fpr1 - fpr0));
      area.add((max_fpr - fpr0) * (pro0 + pro_at) / 2);
      return area.value() / max_fpr;
    }
    area.add((fpr1 - fpr0) * (pro0 + pro1) / 2);
    fpr0 = fpr1;
    pro0 = pro1;
  }
  // The last point is FPR 1 >= max_fpr, so the loop has returned.
  throw_at(__FILE__, __LINE__, "aupro sweep ended below max_fpr");
}

void check_auroc_classes(const RankedPixels& r) {
  CHECK_INPUT(r.n_defect > 0, "pixel_auroc: no defect pixels in any mask (both classes needed)");
  CHECK_INPUT(r.n_good > 0, "pixel_auroc: no good pixels in any mask (both classes needed)");
}
void check_aupro_regions(const RankedPixels& r) {
  CHECK_INPUT(!r.component_sizes.empty(), "aupro: no defect components in any mask");
  CHECK_INPUT(r.n_good > 0, "aupro: no good pixels in any mask, FPR is undefined");
}

}  // namespace

double auroc(std::span<const double> scores, std::span<const uint8_t> labels) {
  check_image_inputs("auroc", scores, labels);
  const auto images = ranked_images(scores, labels);
  // Same counting as auroc_of_ranked, over tie groups of images.
  unsigned __int128 twice_wins = 0;
  uint64_t good_below = 0, n_defective = 0;
  for (size_t i = 0; i < images.size();) {
    const double value = images[i].value;
    uint64_t defective = 0, good = 0;
    for (; i < images.size() && images[i].value == value; ++i)
      ++(images[i].defective ? defective : good);
    twice_wins += (unsigned __int128)(2 * good_below + good) * defective;
    good_below += good;
    n_defective += defective;
  }
  CHECK_INPUT(n_defective > 0, "auroc: no defective images (label 1); both classes needed");
  CHECK_INPUT(good_below > 0, "auroc: no good images (label 0); both classes needed");
  return double(twice_wins) / (2.0 * double(good_below) * double(n_defective));
}

F1 f1_max(std::span<const double> scores, std::span<const uint8_t> labels) {
  check_image_inputs("f1_max", scores, labels);
  const int64_t n_defective =
      std::count_if(labels.begin(), labels.end(), [](uint8_t l) { return l != 0; });
  CHECK_INPUT(n_defective > 0, "f1_max: no defective images (label 1); F1 needs some");
  const auto images = ranked_images(scores, labels);

  // Sweep groups from the highest score down; F1 = 2TP / (TP + FP + n_defective), compared
  // as exact fractions (cross-multiplied) so a later equal F1 never displaces an earlier one.
  int64_t tp = 0, fp = 0, best_tp = 0, best_fp = 0;
  double best_threshold = kInf;
  for (size_t i = images.size(); i > 0;) {
    const double value = images[i - 1].value;
    for (; i > 0 && images[i - 1].value == value; --i) ++(images[i - 1].defective ? tp : fp);
    const __int128 lhs = __int128(tp) * (best_tp + best_fp + n_defective);
    const __int128 rhs = __int128(best_tp) * (tp + fp + n_defective);
    if (lhs > rhs) {
      best_tp = tp;
      best_fp = fp;
      best_threshold = value;
    }
  }
  return make_f1(best_tp, best_fp, n_defective - best_tp, best_threshold);
}

F1 f1_at(std::span<const double> scores, std::span<const uint8_t> labels, double threshold) {
  check_image_inputs("f1_at", scores, labels);
  CHECK_INPUT(!std::isnan(threshold), "f1_at: threshold is NaN");
  int64_t tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    const bool predicted = rank_value(scores[i]) > threshold;
    const bool defective = labels[i] != 0;
    tp += predicted && defective;
    fp += predicted && !defective;
    fn += !predicted && defective;
  }
  return make_f1(tp, fp, fn, threshold);
}

double pixel_auroc(std::span<const MapRef> maps) {
  check_maps("pixel_auroc", maps);
  const RankedPixels r = rank_pixels(maps, /*with_components=*/false);
  check_auroc_classes(r);
  return auroc_of_ranked(r);
}

double aupro(std::span<const MapRef> maps, double max_fpr) {
  check_maps("aupro", maps);
  check_max_fpr(max_fpr);
  const RankedPixels r = rank_pixels(maps, /*with_components=*/true);
  check_aupro_regions(r);
  return aupro_of_ranked(r, max_fpr);
}

PixelMetrics pixel_metrics(std::span<const MapRef> maps, double max_fpr) {
  check_maps("pixel_metrics", maps);
  check_max_fpr(max_fpr);
  const RankedPixels r = rank_pixels(maps, /*with_components=*/true);
  check_aupro_regions(r);  // implies both classes
  PixelMetrics m;
  m.auroc = auroc_of_ranked(r);
  m.aupro = aupro_of_ranked(r, max_fpr);
  m.n_pixels = int64_t(r.pixels.size());
  m.n_good_pixels = r.n_good;
  m.n_components = int64_t(r.component_sizes.size());
  return m;
}

int64_t label_components_8(const uint8_t* mask, int64_t height, int64_t width,
                           int32_t* labels_out) {
  CHECK_INPUT(mask != nullptr && labels_out != nullptr, "label_components_8: null mask or labels");
  CHECK_INPUT(height >= 0 && width >= 0, "label_components_8: negative size {}x{}", height, width);
  const int64_t n = height * width;
  std::fill(labels_out, labels_out + n, -1);
  // Flood fill with an explicit stack (a recursive fill overflows on large defects).
  std::vector<int64_t> stack;
  int32_t n_components = 0;
  for (int64_t start = 0; start < n; ++start) {
    if (mask[start] == 0 || labels_out[start] >= 0) continue;
    CHECK_THROW(n_components < std::numeric_limits<int32_t>::max());
    labels_out[start] = n_components;
    stack.push_back(start);
    while (!stack.empty()) {
      const int64_t p = stack.back();
      stack.pop_back();
      const int64_t y = p / width, x = p % width;
      for (int64_t ny = std::max<int64_t>(y - 1, 0); ny <= std::min(y + 1, height - 1); ++ny)
        for (int64_t nx = std::max<int64_t>(x - 1, 0); nx <= std::min(x + 1, width - 1); ++nx) {
          const int64_t q = ny * width + nx;
          if (mask[q] != 0 && labels_out[q] < 0) {
            labels_out[q] = n_components;
            stack.push_back(q);
          }
        }
    }
    ++n_components;
  }
  return n_components;
}

Cleaning cleaning(const std::vector<int64_t>& rejected, const std::vector<int64_t>& contaminated,
                  int64_t n_total) {
  CHECK_INPUT(n_total > 0, "cleaning: n_total is {}, must be positive", n_total);
  // One byte per image: bit 0 = rejected, bit 1 = contaminated.
  constexpr uint8_t kRejected = 1, kContaminated = 2;
  std::vector<uint8_t> flags(size_t(n_total), 0);
  auto mark = [&](const std::vector<int64_t>& ids, uint8_t bit, const char* list) {
    for (int64_t id : ids) {
      CHECK_INPUT(id >= 0 && id < n_total, "cleaning: {} id {} is not in [0, {})", list, id,
                  n_total);
      CHECK_INPUT((flags[size_t(id)] & bit) == 0, "cleaning: {} id {} is listed twice", list, id);
      flags[size_t(id)] |= bit;
    }
  };
  mark(rejected, kRejected, "rejected");
  mark(contaminated, kContaminated, "contaminated");

  Cleaning c;
  for (uint8_t f : flags) {
    c.tp += f == (kRejected | kContaminated);
    c.fp += f == kRejected;
    c.fn += f == kContaminated;
    c.tn += f == 0;
  }
  const F1 f1 = make_f1(c.tp, c.fp, c.fn, 0);
  c.precision = f1.precision;
  c.recall = f1.recall;
  c.f1 = f1.f1;
  const int64_t n_clean = c.fp + c.tn;
  c.false_rejection_rate = n_clean == 0 ? 0.0 : double(c.fp) / double(n_clean);
  return c;
}

}  // namespace mirad::metrics
