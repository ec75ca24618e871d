// Shared by the CPU and CUDA feature-cache tests: store a known pattern, read it back, gather.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "engine/backbone/feature_cache.h"

namespace mirad::test {


inline std::vector<float> pattern(int64_t n, float base) {
  std::vector<float> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = base + 0.25f * float(i);
  return v;
}

inline void round_trip(FeatureCache& cache) {
  const auto& taps = cache.taps();
  for (int64_t img = 0; img < cache.n_images(); ++img)
    for (size_t t = 0; t < taps.size(); ++t) {
      auto v = pattern(taps[t].numel(), 1000.f * img + 100.f * t);
      cache.store(img, int(t), v.data(), Device::cpu);
    }
  for (int64_t img = 0; img < cache.n_images(); ++img) {
    EXPECT_TRUE(cache.filled(img));
    for (size_t t = 0; t < taps.size(); ++t) {
      std::vector<float> got(taps[t].numel());
      mem::copy(got.data(), Device::cpu, cache.features(img, int(t)), cache.location(),
                got.size() * sizeof(float), {});
      mem::synchronize({});
      EXPECT_EQ(got, pattern(taps[t].numel(), 1000.f * img + 100.f * t));
    }
  }
  // gather: images 2, 0 of tap 1 land back to back.
  const int64_t n1 = taps[1].numel();
  std::vector<float> g(2 * n1);
  cache.gather({2, 0}, 1, g.data(), Device::cpu);
  mem::synchronize({});
  auto a = pattern(n1, 2100.f), b = pattern(n1, 100.f);
  EXPECT_TRUE(std::equal(a.begin(), a.end(), g.begin()));
  EXPECT_TRUE(std::equal(b.begin(), b.end(), g.begin() + n1));
}

inline const std::vector<FeatureTapShape> kTaps = {{5, 3, 7}, {9, 2, 3}};


}  // namespace mirad::test
