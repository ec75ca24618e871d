// FeatureExtractor on a CUDA device (pinned ring, copy and compute streams, cuDNN backbone,
// CUDA smoothing, device-tier cache) against the CPU per-image reference.
#include <gtest/gtest.h>

#include "feature_extractor_test_util.h"

using namespace mirad;

TEST(CudaFeatureExtractor, CachedFeaturesEqualPerImageCpuBackbonePlusSmoothing) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // cuDNN may pick Winograd or FFT convolutions: float32, but not bit-identical to the CPU.
  ASSERT_NO_FATAL_FAILURE(mirad::test::check_extractor(Device::cuda, 1e-4));
}
