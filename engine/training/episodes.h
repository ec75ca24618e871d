// Where training draws its images and positions from: the interface the trainer consumes and
// the seeded episode scheduler (host/episode_scheduler.h) implements.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace mirad {

// One MAML task: disjoint image-level support and query sets (indices into the patch bank).
struct Episode {
  std::vector<int64_t> support, query;
};

class EpisodeSource {
 public:
  virtual ~EpisodeSource() = default;
  // A task of |S| + |Q| distinct images.
  virtual Episode next_task() = 0;
  // A batch of |S| distinct images (plain training, the final adaptation).
  virtual std::vector<int64_t> next_batch() = 0;
  // Bank rows (image * hw + position) of the given images: `positions` distinct positions of
  // each, or all of them when positions is 0 or >= hw.
  virtual std::vector<int64_t> rows(const std::vector<int64_t>& images, int64_t hw,
                                    int64_t positions) = 0;
};

// Builds a source over `images` (bank indices). `weights` (one per image, in [0, 1], or empty
// for all ones) makes the draw proportional to them: the soft-rejection mode's weighted loss,
// as an unbiased sampling of it. Same arguments, same sequence.
using EpisodeSourceFactory = std::function<std::unique_ptr<EpisodeSource>(
    const std::vector<int64_t>& images, const std::vector<double>& weights, int64_t support,
    int64_t query, uint64_t seed)>;

}  // namespace mirad
