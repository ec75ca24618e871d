// Whole-test-set scoring on the device (DeviceTapMaps): fusing, the image parts and the hybrid
// score against the host path on the same NLLs. Skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/detector/scoring.h"
#include "scoring_test_util.h"

using namespace mirad;

TEST(CudaScoring, DeviceMapsMatchTheHostPath) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // The default taps' grids at 256 px.
  TapMaps maps = mirad::test::random_tap_maps({{32, 32}, {16, 16}}, 300, 7);
  maps.nll[0][1000] = NAN;  // image 0 fails at one position: +Inf on both paths
  ScoreSettings ss;
  std::vector<double> calib;
  const ScoreStats st = calibrate_scores(maps, ss, calib);
  std::vector<float> fused;
  const auto want = score_images(maps, st, ss, &fused);
  const DeviceTapMaps dm = mirad::test::to_device(maps, Device::cuda);
  Buffer<float> dfused;
  const auto got = score_images(dm, st, ss, &dfused);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(std::isinf(got[0]) && got[0] > 0);
  double worst = 0;
  for (size_t i = 1; i < got.size(); ++i) {
    worst = std::max(worst, std::abs(got[i] - want[i]) / std::max(1.0, std::abs(want[i])));
    ASSERT_TRUE(std::isfinite(got[i])) << i;
  }
  // The upsampling mixes in float on CUDA and double on the CPU (1e-6 of a value), the parts
  // are added in different orders: agreement to 1e-5 relative.
  std::printf("device vs host scores: max rel. difference %.3g\n", worst);
  EXPECT_LT(worst, 1e-5);
  const auto f = dfused.to_host();
  ASSERT_EQ(f.size(), fused.size());
  for (size_t i = 1024; i < f.size(); ++i)  // image 0 holds the +Inf
    ASSERT_NEAR(f[i], fused[i], 1e-5 * std::max(1.f, std::abs(fused[i]))) << i;
}
