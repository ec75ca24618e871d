// Shared helpers for the scoring tests: per-tap patch NLL maps of random images, and the same
// maps copied to a device for the device-generic scoring path.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/detector/scoring.h"

namespace mirad::test {

// n images, one standard-normal NLL per position of every tap grid, seeded.
inline TapMaps random_tap_maps(std::vector<Grid> grids, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  TapMaps maps;
  maps.grids = std::move(grids);
  maps.n_images = n;
  for (const Grid& g : maps.grids) {
    std::vector<float> v(n * g.size());
    for (auto& x : v) x = nd(rng);
    maps.nll.push_back(std::move(v));
  }
  return maps;
}

inline DeviceTapMaps to_device(const TapMaps& maps, Device device) {
  DeviceTapMaps dm;
  dm.grids = maps.grids, dm.n_images = maps.n_images, dm.device = device;
  for (const auto& v : maps.nll) dm.nll.push_back(Buffer<float>::from_host(v, device));
  return dm;
}

}  // namespace mirad::test
