// FeatureCache on a CUDA device: the device tier, and pinned host memory under a small budget.
#include <gtest/gtest.h>

#include "engine/backbone/feature_cache.h"
#include "feature_cache_test_util.h"

using namespace mirad;
using mirad::test::kTaps;
using mirad::test::round_trip;

TEST(CudaFeatureCache, DeviceTierRoundTrip) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  FeatureCache cache(kTaps, 4, Device::cuda);
  EXPECT_EQ(cache.tier(), CacheTier::device);
  round_trip(cache);
  CacheBudget small;
  small.device_bytes = 16;
  FeatureCache pinned(kTaps, 4, Device::cuda, small);
  EXPECT_EQ(pinned.tier(), CacheTier::pinned_host);
  round_trip(pinned);
}
