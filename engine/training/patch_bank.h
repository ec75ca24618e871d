// PatchBank: one tap's features of every training image as position-major rows ([n_images *
// HW, C], one row per position), standardised per channel, with the positional-encoding table
// of the tap's grid. Training batches are gathers of rows; scoring reads whole images in place.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"
#include "engine/backbone/feature_cache.h"

namespace mirad {

// Per-channel standardisation x' = (x - mean) / std: a fixed preconditioner so the coupling
// subnets see unit-scale inputs whatever the backbone's feature scale. Stored in the model.
struct ChannelNorm {
  std::vector<float> mean, std;
};

// A gathered batch: rows of x ([rows, C]) and their condition ([rows, cond_dim]).
struct PatchBatch {
  Buffer<float> x, c;
  Buffer<int64_t> idx;
  int64_t rows = 0, dim = 0, cond_dim = 0;
  MatrixView<const float> xv() const { return {x.data(), rows, dim, x.device()}; }
  MatrixView<const float> cv() const {
    return cond_dim ? MatrixView<const float>{c.data(), rows, cond_dim, c.device()}
                    : MatrixView<const float>{};
  }
};

class PatchBank {
 public:
  // Tap `tap` of the cache's images (all of them, or `images` in that order), moved to
  // `device`. The norm is computed over all positions of those images when `norm` is empty,
  // else applied as given (a saved model's).
  PatchBank(const FeatureCache& cache, int tap, int64_t cond_dim, Device device,
            const ChannelNorm& norm = {}, Stream stream = {},
            const std::vector<int64_t>& images = {});
  // From rows already in position-major layout on the host ([n_images*HW, C], unnormalised).
  PatchBank(std::vector<float> rows, int64_t n_images, int64_t channels, int64_t height,
            int64_t width, int64_t cond_dim, Device device, const ChannelNorm& norm = {},
            Stream stream = {});

  int64_t channels() const { return m_c; }
  int64_t height() const { return m_h; }
  int64_t width() const { return m_w; }
  int64_t hw() const { return m_h * m_w; }
  int64_t n_images() const { return m_n; }
  int64_t cond_dim() const { return m_cond; }
  Device device() const { return m_device; }
  const ChannelNorm& norm() const { return m_norm; }

  // Rows of images [first, first + count): contiguous, [count*HW, C].
  MatrixView<const float> image_rows(int64_t first, int64_t count) const;
  // Whole images scored in one forward: at most this many (about 16k rows).
  int64_t max_score_images() const { return std::max<int64_t>(1, kScoreRows / hw()); }
  // The condition for `count` <= max_score_images() whole images ([count*HW, cond_dim]);
  // empty when cond_dim == 0. Built once, so concurrent readers are safe.
  MatrixView<const float> image_condition(int64_t count) const;
  static constexpr int64_t kScoreRows = 16384;
  // A hash of image i's features: equal for exact duplicates, which cross-fit keeps in one
  // fold (else a flow would vouch for an image whose copy it trained on).
  uint64_t image_fingerprint(int64_t i) const { return m_fingerprints.at(i); }
  // The [HW, cond_dim] positional-encoding table (device of the bank); null when cond_dim == 0.
  const float* condition_table() const { return m_cond ? m_posenc.data() : nullptr; }
  // Gathers the given rows (image * HW + position, validated here) into `out`.
  void gather(const std::vector<int64_t>& rows, PatchBatch& out, Stream stream = {}) const;

 private:
  void init(std::vector<float> rows, const ChannelNorm& norm, Stream stream);

  int64_t m_n = 0, m_c = 0, m_h = 0, m_w = 0, m_cond = 0;
  Device m_device;
  ChannelNorm m_norm;
  Buffer<float> m_rows;       // [n*HW, C], standardised
  Buffer<float> m_posenc;     // [HW, cond]
  Buffer<float> m_cond_rep;  // the table repeated max_score_images() times
  std::vector<uint64_t> m_fingerprints;
};

}  // namespace mirad
