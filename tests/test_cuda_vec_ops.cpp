// CUDA vector ops against the CPU reference on odd sizes with sentinel regions, the dot
// product's determinism and scratch forms, and 64-bit indexing past 2^31 entries.
// Suite names start with 'cuda_vec_ops' so that `ctest -R vec_ops` selects them.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "cuda_diff.h"
#include "kernels/vec_ops.h"

namespace mirad {
namespace {

// A device array of n floats in the middle of a larger allocation filled with sentinels
// (tests/cuda_diff.h).
using Guarded = test::Guarded<float, 333>;

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  return test::uniform_values(n, seed, -2.f, 2.f);
}

// |got - want| within a few float ulps of the terms' magnitude: nvcc contracts a*x + y into
// one fma, g++ (no -mfma) rounds twice, so they differ by up to an ulp of |a*x| + |y|.
void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                  const std::vector<float>& magnitude, const std::string& what) {
  // The bound in float as before; the difference in double is exact, so no borderline case
  // passes that failed in float.
  test::expect_each_close(got, want, [&](size_t i) { return 3e-7f * (magnitude[i] + 1e-30f); },
                          what);
}

class cuda_vec_ops : public ::testing::TestWithParam<int64_t> {};

TEST_P(cuda_vec_ops, ElementWiseMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = GetParam();
  const auto x = random_vector(n, 1), y0 = random_vector(n, 2);
  const float a = 0.37f, b = -1.25f;
  std::vector<float> mag_axpy(n), mag_axpby(n), mag_scale(n), mag_affine(n);
  for (int64_t i = 0; i < n; ++i) {
    mag_axpy[i] = std::abs(a * x[i]) + std::abs(y0[i]);
    mag_axpby[i] = std::abs(a * x[i]) + std::abs(b * y0[i]);
    mag_scale[i] = std::abs(a * y0[i]);
    mag_affine[i] = std::abs(a * x[i]) + std::abs(b);
  }
  Guarded dx(x);
  {
    Guarded dy(y0);
    auto want = y0;
    vec::axpy(n, a, dx.data(), dy.data(), Device::cuda);
    vec::axpy(n, a, x.data(), want.data(), Device::cpu);
    expect_close(dy.body("axpy"), want, mag_axpy, "axpy");
  }
  {
    Guarded dy(y0);
    auto want = y0;
    vec::axpby(n, a, dx.data(), b, dy.data(), Device::cuda);
    vec::axpby(n, a, x.data(), b, want.data(), Device::cpu);
    expect_close(dy.body("axpby"), want, mag_axpby, "axpby");
  }
  {
    // b == 0 must not read y: start from NaN.
    Guarded dy(std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()));
    vec::axpby(n, a, dx.data(), 0.f, dy.data(), Device::cuda);
    const auto got = dy.body("axpby b=0");
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(got[i], a * x[i]) << i;
  }
  {
    Guarded dy(y0);
    auto want = y0;
    vec::scale(n, a, dy.data(), Device::cuda);
    vec::scale(n, a, want.data(), Device::cpu);
    expect_close(dy.body("scale"), want, mag_scale, "scale");
  }
  {
    Guarded dy(y0);
    std::vector<float> want(n);
    vec::affine(n, a, b, dx.data(), dy.data(), Device::cuda);
    vec::affine(n, a, b, x.data(), want.data(), Device::cpu);
    expect_close(dy.body("affine"), want, mag_affine, "affine");
    // In place: x may equal y.
    Guarded dz(x);
    vec::affine(n, a, b, dz.data(), dz.data(), Device::cuda);
    expect_close(dz.body("affine in place"), want, mag_affine, "affine in place");
  }
  {
    Guarded dy(y0);
    vec::fill(n, 3.5f, dy.data(), Device::cuda);
    for (float v : dy.body("fill")) ASSERT_EQ(v, 3.5f);
  }
  EXPECT_EQ(dx.body("x untouched"), x);
}

TEST_P(cuda_vec_ops, DotMatchesCpuAndIsDeterministic) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = GetParam();
  const auto x = random_vector(n, 3), y = random_vector(n, 4);
  Guarded dx(x), dy(y);
  double abs_sum = 0;
  for (int64_t i = 0; i < n; ++i) abs_sum += std::abs(double(x[i]) * double(y[i]));
  const double want = vec::dot_host(n, x.data(), y.data(), Device::cpu);

  // Result on the device, through the cached scratch and through a caller workspace.
  Buffer<double> out(3, Device::cuda);
  vec::dot(n, dx.data(), dy.data(), out.data(), Device::cuda);
  vec::DotWorkspace workspace;
  vec::dot(n, dx.data(), dy.data(), out.data() + 1, workspace, Device::cuda);
  vec::dot(n, dx.data(), dy.data(), out.data() + 2, Device::cuda);
  const auto got = out.to_host();
  // Products are exact in double; only the order of double additions differs from the CPU.
  EXPECT_NEAR(got[0], want, 1e-14 * abs_sum + 1e-300);
  // Fixed grid and tree: bit-identical on every call, whichever scratch it used.
  EXPECT_EQ(std::memcmp(&got[0], &got[1], sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(&got[0], &got[2], sizeof(double)), 0);
  const double host = vec::dot_host(n, dx.data(), dy.data(), Device::cuda);
  EXPECT_EQ(std::memcmp(&got[0], &host, sizeof(double)), 0);
}

TEST_P(cuda_vec_ops, CountNonfiniteMatchesCpu) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = GetParam();
  auto x = random_vector(n, 5);
  std::mt19937_64 rng(6);
  const float specials[3] = {std::numeric_limits<float>::quiet_NaN(),
                             std::numeric_limits<float>::infinity(),
                             -std::numeric_limits<float>::infinity()};
  for (int64_t i = 0; i < n; i += 1 + int64_t(rng() % 97)) x[i] = specials[rng() % 3];
  x[n - 1] = specials[0];  // the last entry, where a tail bug would miss it
  unsigned long long want = 0;
  vec::count_nonfinite(n, x.data(), &want, Device::cpu);
  Guarded dx(x);
  auto count = Buffer<unsigned long long>::from_host({1000}, Device::cuda);
  vec::count_nonfinite(n, dx.data(), count.data(), Device::cuda);
  vec::count_nonfinite(n, dx.data(), count.data(), Device::cuda);  // accumulates
  EXPECT_EQ(count.to_host()[0], 1000 + 2 * want);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, cuda_vec_ops,
                         ::testing::Values(1, 31, 256, 1000, 65537, 262145, 3000017),
                         [](const auto& info) { return "n" + std::to_string(info.param); });

TEST(cuda_vec_ops_api, EmptyAndStreams) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  // n == 0: the dot still writes its 0 to the device.
  auto out = Buffer<double>::from_host({42.0}, Device::cuda);
  vec::dot(0, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr), out.data(),
           Device::cuda);
  EXPECT_EQ(out.to_host()[0], 0.0);
  // A non-default stream gets its own cached scratch; results agree.
  cudaStream_t raw = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking), cudaSuccess);
  const Stream stream{raw};
  const auto x = random_vector(100001, 7);
  auto dx = Buffer<float>::from_host(x, Device::cuda);
  const double on_stream =
      vec::dot_host(int64_t(x.size()), dx.data(), dx.data(), Device::cuda, stream);
  const double on_default = vec::dot_host(int64_t(x.size()), dx.data(), dx.data(), Device::cuda);
  EXPECT_EQ(on_stream, on_default);
  vec::scale(int64_t(x.size()), 2.f, dx.data(), Device::cuda, stream);
  EXPECT_EQ(vec::dot_host(int64_t(x.size()), dx.data(), dx.data(), Device::cuda, stream),
            4 * on_default);  // exact: scaling by 2 scales every product by 4
  ASSERT_EQ(cudaStreamDestroy(raw), cudaSuccess);
}

TEST(cuda_vec_ops_api, IndexingPast2To31) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t n = (int64_t(1) << 31) + 77;
  std::size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  if (free_bytes < 2 * n * sizeof(float) + (std::size_t(1) << 30))
    GTEST_SKIP() << "needs " << (2 * n * sizeof(float)) / (1 << 20) << " MiB of device memory";
  Buffer<float> x(n, Device::cuda), y(n, Device::cuda);
  vec::fill(n, 1.f, x.data(), Device::cuda);
  vec::fill(n, 2.f, y.data(), Device::cuda);
  vec::axpy(n, 0.5f, x.data(), y.data(), Device::cuda);  // y = 2.5 everywhere
  // Entries on both sides of 2^31 and the very last one.
  for (int64_t i : {int64_t(0), (int64_t(1) << 31) - 1, int64_t(1) << 31, n - 1}) {
    float v = 0;
    mem::copy(&v, Device::cpu, y.data() + i, Device::cuda, sizeof(float), {});
    mem::synchronize({});
    EXPECT_EQ(v, 2.5f) << i;
  }
  // Every partial is a multiple of 2.5 below 2^53: the double sum is exact.
  EXPECT_EQ(vec::dot_host(n, x.data(), y.data(), Device::cuda), 2.5 * double(n));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  mem::copy(y.data() + (n - 1), Device::cuda, &nan, Device::cpu, sizeof(float), {});
  auto count = Buffer<unsigned long long>::from_host({0}, Device::cuda);
  vec::count_nonfinite(n, y.data(), count.data(), Device::cuda);
  EXPECT_EQ(count.to_host()[0], 1u);
}

}  // namespace
}  // namespace mirad
