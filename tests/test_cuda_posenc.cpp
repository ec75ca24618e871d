// CUDA positional encoding against the CPU reference on odd grids, with sentinel regions.
// Suite names start with 'posenc' (lower case, as ctest -R matches case-sensitively) so that
// `ctest -R posenc` selects them.
#include <gtest/gtest.h>

#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "cuda_diff.h"
#include "kernels/posenc.h"

namespace mirad {
namespace {

struct Grid {
  int64_t D, H, W;
};
void PrintTo(const Grid& g, std::ostream* os) {
  *os << "D=" << g.D << " " << g.H << "x" << g.W;
}

class cuda_posenc : public ::testing::TestWithParam<Grid> {};

TEST_P(cuda_posenc, MatchesCpuWithSentinels) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device available";
  const auto [D, H, W] = GetParam();
  const int64_t n = H * W * D;
  std::vector<float> cpu(n);
  positional_encoding_2d(D, H, W, cpu.data(), Device::cpu);
  // Sentinels before and after: the kernel is handed the middle of a larger allocation.
  test::Guarded<float, 517> dev(n);
  positional_encoding_2d(D, H, W, dev.data(), Device::cuda);
  const std::vector<float> got = dev.body("table");
  // Both sides evaluate the same double formula and round once; device sin/cos/exp are within
  // 2 double ulp, so the floats agree except at a rare rounding tie: allow one float ulp.
  test::expect_each_close(got, cpu, [](size_t) { return 1.2e-7f; }, "table");
}

INSTANTIATE_TEST_SUITE_P(OddGrids, cuda_posenc,
                         ::testing::Values(Grid{64, 7, 13}, Grid{128, 7, 13}, Grid{4, 1, 1},
                                           Grid{64, 1, 97}, Grid{128, 57, 3}, Grid{256, 64, 64}),
                         [](const auto& info) {
                           const Grid& g = info.param;
                           return "D" + std::to_string(g.D) + "_" + std::to_string(g.H) + "x" +
                                  std::to_string(g.W);
                         });

TEST(cuda_posenc_api, AllocatingFormMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device available";
  const auto got = positional_encoding_2d(64, 28, 28, Device::cuda).to_host();
  const auto want = positional_encoding_2d(64, 28, 28, Device::cpu).to_host();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1.2e-7f) << i;
}

}  // namespace
}  // namespace mirad
