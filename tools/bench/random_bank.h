// The synthetic training set of the MAML and training-step benchmarks (Google Benchmark and
// `mirad bench`): 32 images of 16 x 16 positions with standard-normal features, seeded, so
// every benchmark of a step trains on the same rows.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/training/patch_bank.h"

namespace mirad::bench {

struct RandomBank {
  PatchBank bank;
  std::vector<int64_t> images;  // 0 .. n_images-1, for the episode scheduler
};

inline RandomBank random_bank(int64_t dim, int64_t cond_dim, Device device) {
  constexpr int64_t n_images = 32, height = 16, width = 16;
  std::mt19937 rng(4);
  std::normal_distribution<float> nd;
  std::vector<float> rows(n_images * height * width * dim);
  for (float& v : rows) v = nd(rng);
  std::vector<int64_t> images(n_images);
  for (int64_t i = 0; i < n_images; ++i) images[i] = i;
  return {PatchBank(std::move(rows), n_images, dim, height, width, cond_dim, device),
          std::move(images)};
}

}  // namespace mirad::bench
