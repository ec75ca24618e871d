// CUDA quartiles against the CPU reference on odd sizes with NaN, ties, Inf; the device input
// must come back untouched, and nothing past its end may be read.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "expect_error.h"
#include "core/buffer.h"
#include "core/device.h"
#include "core/error.h"
#include "cuda_diff.h"
#include "kernels/quantiles.h"

#ifdef MIRAD_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace mirad {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
// Values around the n scores: if the kernel read them, the quartiles would jump.
constexpr int64_t kGuardLength = 67;
constexpr float kGuardValue = 1e30f;

#define SKIP_WITHOUT_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device available"

enum class Fill { normal, with_nan, ties, with_inf };

std::string fill_name(Fill f) {
  switch (f) {
    case Fill::normal:
      return "normal";
    case Fill::with_nan:
      return "with_nan";
    case Fill::ties:
      return "ties";
    case Fill::with_inf:
      return "with_inf";
  }
  return "unknown";
}

// Readable parameter names in gtest's output instead of "4-byte object <01-00 00-00>".
void PrintTo(Fill f, std::ostream* os) {
  *os << fill_name(f);
}

std::vector<float> make_scores(int64_t n, Fill fill, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(5.0f, 3.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  // Few distinct values, signed zeros among them: radix sort orders -0 before +0, the CPU
  // does not care, and the quartiles must still compare equal.
  const float tie_values[] = {-1.0f, -0.0f, 0.0f, 0.5f, 2.0f};
  std::vector<float> scores(static_cast<std::size_t>(n));
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const float u = unit(rng);
    switch (fill) {
      case Fill::normal:
        scores[i] = normal(rng);
        break;
      // Index 0 stays valid so that even n = 1 is not all NaN.
      case Fill::with_nan:
        scores[i] = (i > 0 && u < 0.15f) ? kNaN : normal(rng);
        break;
      case Fill::ties:
        scores[i] = tie_values[static_cast<int>(u * 5.0f) % 5];
        break;
      case Fill::with_inf:
        scores[i] = u < 0.05f ? kInf : (u < 0.07f ? -kInf : (u < 0.1f ? kNaN : normal(rng)));
        if (i == 0 && std::isnan(scores[i])) scores[i] = 1.0f;
        break;
    }
  }
  return scores;
}

// NaN-aware: -Inf next to +Inf interpolates to NaN on both backends.
bool same_value(double a, double b) {
  return (std::isnan(a) && std::isnan(b)) || a == b;
}

void expect_same_stats(const QuartileStats& got, const QuartileStats& want,
                       const std::string& what) {
  EXPECT_PRED2(same_value, got.q1, want.q1) << what;
  EXPECT_PRED2(same_value, got.median, want.median) << what;
  EXPECT_PRED2(same_value, got.q3, want.q3) << what;
  EXPECT_PRED2(same_value, got.iqr, want.iqr) << what;
  EXPECT_EQ(got.n_valid, want.n_valid) << what;
  EXPECT_EQ(got.n_nan, want.n_nan) << what;
}

// Device copy of the scores between guard values (tests/cuda_diff.h).
using Guarded = test::Guarded<float, kGuardLength>;
Guarded upload_with_guard(const std::vector<float>& scores) {
  return Guarded(int64_t(scores.size()), scores, kGuardValue, Device::cuda);
}

void expect_device_unchanged(const Guarded& d_scores, const std::vector<float>& scores) {
  const std::vector<float> after = d_scores.body("quartiles_cuda input");
  // Bytes, because NaN != NaN.
  EXPECT_EQ(std::memcmp(after.data(), scores.data(), scores.size() * sizeof(float)), 0)
      << "quartiles_cuda modified its input";
}

class CudaQuartiles : public ::testing::TestWithParam<std::tuple<int64_t, Fill>> {};

TEST_P(CudaQuartiles, MatchesCpuAndLeavesInputUntouched) {
  SKIP_WITHOUT_CUDA();
  const auto [n, fill] = GetParam();
  const std::vector<float> scores = make_scores(n, fill, 1000 + static_cast<uint64_t>(n));
  Guarded d_scores = upload_with_guard(scores);

  QuantileWorkspace workspace;
  const QuartileStats got = quartiles_cuda(d_scores.data(), n, Stream{}, workspace);
  const QuartileStats want = quartiles_cpu(scores.data(), n);
  expect_same_stats(got, want, "n=" + std::to_string(n) + " fill=" + fill_name(fill));
  expect_device_unchanged(d_scores, scores);
}

INSTANTIATE_TEST_SUITE_P(
    cuda_quantiles, CudaQuartiles,
    ::testing::Combine(::testing::Values<int64_t>(1, 2, 3, 1023, 4097, (int64_t{1} << 20) + 3),
                       ::testing::Values(Fill::normal, Fill::with_nan, Fill::ties, Fill::with_inf)),
    [](const auto& info) {
      return "n" + std::to_string(std::get<0>(info.param)) + "_" +
             fill_name(std::get<1>(info.param));
    });

TEST(cuda_quantiles, WorkspaceReusedAcrossSizes) {
  SKIP_WITHOUT_CUDA();
  // Large, then small (the workspace is oversized), then larger than ever (it must grow).
  QuantileWorkspace workspace;
  for (int64_t n : {int64_t{100003}, int64_t{5}, int64_t{300007}, int64_t{1}}) {
    const std::vector<float> scores = make_scores(n, Fill::with_nan, 7 + static_cast<uint64_t>(n));
    Guarded d_scores = upload_with_guard(scores);
    expect_same_stats(quartiles_cuda(d_scores.data(), n, Stream{}, workspace),
                      quartiles_cpu(scores.data(), n), "n=" + std::to_string(n));
    expect_device_unchanged(d_scores, scores);
  }
}

TEST(cuda_quantiles, DispatchAndPerCallWorkspace) {
  SKIP_WITHOUT_CUDA();
  const int64_t n = 4099;
  const std::vector<float> scores = make_scores(n, Fill::normal, 42);
  Guarded d_scores = upload_with_guard(scores);
  const QuartileStats want = quartiles_cpu(scores.data(), n);
  expect_same_stats(quartiles(d_scores.data(), n, Device::cuda, Stream{}), want, "dispatch");
  expect_same_stats(quartiles_cuda(d_scores.data(), n, Stream{}), want, "per-call workspace");
}

#ifdef MIRAD_HAVE_CUDA
TEST(cuda_quantiles, RunsOnTheGivenStream) {
  SKIP_WITHOUT_CUDA();
  cudaStream_t raw = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking), cudaSuccess);
  const int64_t n = 65537;
  const std::vector<float> scores = make_scores(n, Fill::with_inf, 9);
  {
    Guarded d_scores = upload_with_guard(scores);
    // A non-blocking stream does not wait for the legacy default stream, so a call that
    // queued any of its work elsewhere would race with this one and, sooner or later, differ.
    expect_same_stats(quartiles_cuda(d_scores.data(), n, Stream{raw}),
                      quartiles_cpu(scores.data(), n), "own stream");
    expect_device_unchanged(d_scores, scores);
  }
  EXPECT_EQ(cudaStreamDestroy(raw), cudaSuccess);
}
#endif

using mirad::test::expect_input_error;

TEST(cuda_quantiles, AllNaNOnDeviceThrows) {
  SKIP_WITHOUT_CUDA();
  const std::vector<float> nans(1025, kNaN);
  Buffer<float> d_nans = Buffer<float>::from_host(nans, Device::cuda);
  expect_input_error([&] { quartiles_cuda(d_nans.data(), 1025, Stream{}); },
                     "all 1025 scores are NaN");
}

TEST(cuda_quantiles, EmptyThrows) {
  SKIP_WITHOUT_CUDA();
  Buffer<float> d_one = Buffer<float>::from_host({1.0f}, Device::cuda);
  expect_input_error([&] { quartiles_cuda(d_one.data(), 0, Stream{}); },
                     "quantiles of an empty score array");
}

TEST(cuda_quantiles, HostPointerThrows) {
  SKIP_WITHOUT_CUDA();
  const std::vector<float> host_scores = {1, 2, 3};
  expect_input_error([&] { quartiles_cuda(host_scores.data(), 3, Stream{}); }, "device memory");
}

}  // namespace
}  // namespace mirad
