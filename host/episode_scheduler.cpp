// EpisodeScheduler: partial Fisher-Yates draws on mt19937_64 (library-independent, so the
// same seed gives the same episodes on every platform), weighted draws by sorted keys.
#include "host/episode_scheduler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "host/contamination.h"

namespace mirad {

EpisodeScheduler::EpisodeScheduler(std::vector<int64_t> images, std::vector<double> weights,
                                   int64_t support, int64_t query, uint64_t seed)
    : m_images(std::move(images)), m_weights(std::move(weights)), m_rng(seed) {
  const int64_t n = int64_t(m_images.size());
  CHECK_INPUT(n >= 2, "episode scheduler: a task needs at least 2 training images (got {})", n);
  CHECK_INPUT(support >= 1 && query >= 1, "episode scheduler: |S| = {} and |Q| = {} must be >= 1",
              support, query);
  CHECK_INPUT(m_weights.empty() || int64_t(m_weights.size()) == n,
              "episode scheduler: {} weights for {} images", m_weights.size(), n);
  for (double w : m_weights)
    CHECK_INPUT(std::isfinite(w) && w >= 0 && w <= 1, "episode scheduler: weight {} not in [0, 1]",
                w);
  if (support + query <= n) {
    m_support = support, m_query = query;
  } else {
    m_support = n / 2, m_query = n - n / 2;
  }
}

std::vector<int64_t> EpisodeScheduler::draw(int64_t k) {
  const int64_t n = int64_t(m_images.size());
  k = std::min(k, n);
  std::vector<int64_t> out;
  out.reserve(k);
  if (m_weights.empty()) {
    m_scratch.resize(n);
    std::iota(m_scratch.begin(), m_scratch.end(), 0);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = i + int64_t(uniform_below(m_rng, uint64_t(n - i)));
      std::swap(m_scratch[i], m_scratch[j]);
      out.push_back(m_images[m_scratch[i]]);
    }
    return out;
  }
  // Efraimidis-Spirakis: the k largest keys log(u)/w are a weighted draw without replacement.
  std::vector<std::pair<double, int64_t>> keys(n);
  for (int64_t i = 0; i < n; ++i) {
    const double u = (double((m_rng() >> 11) + 1)) * 0x1.0p-53;  // (0, 1]
    const double w = m_weights[i];
    keys[i] = {w > 0 ? std::log(u) / w : -INFINITY, i};
  }
  std::partial_sort(keys.begin(), keys.begin() + k, keys.end(),
                    [](const auto& a, const auto& b) {
                      return a.first > b.first || (a.first == b.first && a.second < b.second);
                    });
  for (int64_t i = 0; i < k; ++i) out.push_back(m_images[keys[i].second]);
  return out;
}

Episode EpisodeScheduler::next_task() {
  auto all = draw(m_support + m_query);
  Episode e;
  e.support.assign(all.begin(), all.begin() + m_support);
  e.query.assign(all.begin() + m_support, all.end());
  return e;
}

std::vector<int64_t> EpisodeScheduler::next_batch() { return draw(m_support); }

std::vector<int64_t> EpisodeScheduler::rows(const std::vector<int64_t>& images, int64_t hw,
                                            int64_t positions) {
  CHECK_INPUT(hw > 0, "episode scheduler: grid of {} positions", hw);
  const bool all = positions <= 0 || positions >= hw;
  const int64_t k = all ? hw : positions;
  std::vector<int64_t> out;
  out.reserve(images.size() * k);
  std::vector<int64_t> pos(hw);
  for (int64_t img : images) {
    if (all) {
      for (int64_t p = 0; p < hw; ++p) out.push_back(img * hw + p);
      continue;
    }
    std::iota(pos.begin(), pos.end(), 0);
    for (int64_t i = 0; i < k; ++i) {
      const int64_t j = i + int64_t(uniform_below(m_rng, uint64_t(hw - i)));
      std::swap(pos[i], pos[j]);
      out.push_back(img * hw + pos[i]);
    }
  }
  return out;
}

EpisodeSourceFactory EpisodeScheduler::factory() {
  return [](const std::vector<int64_t>& images, const std::vector<double>& weights,
            int64_t support, int64_t query, uint64_t seed) -> std::unique_ptr<EpisodeSource> {
    return std::make_unique<EpisodeScheduler>(images, weights, support, query, seed);
  };
}

}  // namespace mirad
