// The seeded episode scheduler: MAML tasks (disjoint support/query image sets), training
// batches and per-image position samples, drawn without replacement, optionally weighted.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/training/episodes.h"

namespace mirad {

class EpisodeScheduler final : public EpisodeSource {
 public:
  // images: the pool (bank indices); weights: empty, or one per image in [0, 1] (soft mode:
  // images are drawn with probability proportional to their weight, by Efraimidis-Spirakis
  // keys u^(1/w), so a weight-0 image is drawn only when nothing else is left). When the pool
  // is smaller than |S| + |Q|, tasks split it in half (support gets the smaller half); it
  // must hold at least 2 images.
  EpisodeScheduler(std::vector<int64_t> images, std::vector<double> weights, int64_t support,
                   int64_t query, uint64_t seed);

  Episode next_task() override;
  std::vector<int64_t> next_batch() override;
  std::vector<int64_t> rows(const std::vector<int64_t>& images, int64_t hw,
                            int64_t positions) override;

  int64_t support_size() const { return m_support; }
  int64_t query_size() const { return m_query; }

  static EpisodeSourceFactory factory();

 private:
  // k distinct pool entries, in draw order.
  std::vector<int64_t> draw(int64_t k);

  std::vector<int64_t> m_images;
  std::vector<double> m_weights;
  int64_t m_support, m_query;
  std::mt19937_64 m_rng;
  std::vector<int64_t> m_scratch;
};

}  // namespace mirad
