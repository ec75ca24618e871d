// FeatureCache: every tier stores and returns features exactly; budgets pick the tier.
#include <gtest/gtest.h>

#include <numeric>

#include "core/error.h"
#include "engine/backbone/feature_cache.h"
#include "feature_cache_test_util.h"

using namespace mirad;

using mirad::test::kTaps;
using mirad::test::round_trip;

TEST(FeatureCache, HostTierRoundTrip) {
  FeatureCache cache(kTaps, 4, Device::cpu);
  EXPECT_TRUE(cache.tier() == CacheTier::host || cache.tier() == CacheTier::pinned_host);
  EXPECT_EQ(cache.bytes(), uint64_t(4 * (105 + 54) * 4));
  round_trip(cache);
}

TEST(FeatureCache, OverBudgetSpillsToMappedFile) {
  CacheBudget budget;
  budget.host_bytes = 64;  // far below the 2.5 KB needed
  FeatureCache cache(kTaps, 4, Device::cpu, budget);
  EXPECT_EQ(cache.tier(), CacheTier::mapped_file);
  round_trip(cache);
}

TEST(FeatureCache, BadInputIsRejected) {
  EXPECT_THROW(FeatureCache({}, 3, Device::cpu), InputError);
  EXPECT_THROW(FeatureCache(kTaps, 0, Device::cpu), InputError);
  EXPECT_THROW(FeatureCache({{4, 0, 2}}, 3, Device::cpu), InputError);
  FeatureCache cache(kTaps, 2, Device::cpu);
  std::vector<float> v(105);
  EXPECT_THROW(cache.store(2, 0, v.data(), Device::cpu), InputError);
  EXPECT_THROW(cache.store(0, 2, v.data(), Device::cpu), InputError);
  EXPECT_THROW(cache.features(1, 0), InputError);  // never stored
  EXPECT_FALSE(cache.filled(0));
  CacheBudget bad;
  bad.host_bytes = 1;
  bad.spill_dir = "/nonexistent/dir";
  EXPECT_THROW(FeatureCache(kTaps, 2, Device::cpu, bad), InputError);
}
