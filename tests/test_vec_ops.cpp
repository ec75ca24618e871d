// CPU tests of the vector ops (kernels/vec_ops.h): exact small cases, float and double against
// naive float64 loops, aliasing, b == 0 semantics, non-finite counts and argument validation.
// Suite names start with 'vec_ops' so that `ctest -R vec_ops` selects them.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "expect_error.h"
#include "kernels/vec_ops.h"

namespace mirad {
namespace {

template <typename T>
std::vector<T> random_vector(int64_t n, uint64_t seed, double lo = -2, double hi = 2) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(dist(rng));
  return v;
}

TEST(vec_ops, HandComputedFloat) {
  std::vector<float> x = {1, 2, 3, -4}, y = {10, 20, 30, 40};
  vec::axpy(4, 0.5f, x.data(), y.data(), Device::cpu);
  EXPECT_EQ(y, (std::vector<float>{10.5f, 21, 31.5f, 38}));
  vec::axpby(4, 2.f, x.data(), -1.f, y.data(), Device::cpu);
  EXPECT_EQ(y, (std::vector<float>{-8.5f, -17, -25.5f, -46}));
  vec::scale(4, -2.f, y.data(), Device::cpu);
  EXPECT_EQ(y, (std::vector<float>{17, 34, 51, 92}));
  vec::affine(4, 3.f, 1.f, x.data(), y.data(), Device::cpu);
  EXPECT_EQ(y, (std::vector<float>{4, 7, 10, -11}));
  vec::fill(3, 7.25f, y.data(), Device::cpu);
  EXPECT_EQ(y, (std::vector<float>{7.25f, 7.25f, 7.25f, -11}));
  // 1*10.5 + 2*21 + 3*31.5 - 4*38 would be the old y; here: 1*7.25 + 2*7.25 + 3*7.25 - 4*-11.
  EXPECT_EQ(vec::dot_host(4, x.data(), y.data(), Device::cpu), 7.25 * 6 + 44);
  double out = -1;
  vec::dot(4, x.data(), x.data(), &out, Device::cpu);
  EXPECT_EQ(out, 1 + 4 + 9 + 16);
}

template <typename T>
void check_against_float64(int64_t n, double tol) {
  const auto x = random_vector<T>(n, 1), y0 = random_vector<T>(n, 2);
  const T a = T(0.37), b = T(-1.25);
  auto expect_close = [&](const std::vector<T>& got, auto&& want_at, const char* what) {
    for (int64_t i = 0; i < n; ++i)
      ASSERT_NEAR(double(got[i]), want_at(i), tol * (1 + std::abs(want_at(i)))) << what << " " << i;
  };
  auto y = y0;
  vec::axpy(n, a, x.data(), y.data(), Device::cpu);
  expect_close(
      y, [&](int64_t i) { return double(y0[i]) + double(a) * double(x[i]); }, "axpy");
  y = y0;
  vec::axpby(n, a, x.data(), b, y.data(), Device::cpu);
  expect_close(
      y, [&](int64_t i) { return double(a) * double(x[i]) + double(b) * double(y0[i]); }, "axpby");
  y = y0;
  vec::scale(n, a, y.data(), Device::cpu);
  expect_close(
      y, [&](int64_t i) { return double(a) * double(y0[i]); }, "scale");
  vec::affine(n, a, b, x.data(), y.data(), Device::cpu);
  expect_close(
      y, [&](int64_t i) { return double(a) * double(x[i]) + double(b); }, "affine");

  double want = 0, abs_sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    want += double(x[i]) * double(y0[i]);
    abs_sum += std::abs(double(x[i]) * double(y0[i]));
  }
  // Accumulated in double for float input too: only double rounding separates them.
  EXPECT_NEAR(vec::dot_host(n, x.data(), y0.data(), Device::cpu), want, 1e-13 * abs_sum);
}

TEST(vec_ops, FloatMatchesFloat64Loops) {
  check_against_float64<float>(1001, 2e-7);
}
TEST(vec_ops, DoubleMatchesFloat64Loops) {
  check_against_float64<double>(1001, 1e-15);
}

TEST(vec_ops, FloatDotAccumulatesInDouble) {
  // 2^25 ones: a float accumulator stalls at 2^24, a double one is exact.
  const int64_t n = int64_t(1) << 25;
  std::vector<float> ones(n, 1.f);
  EXPECT_EQ(vec::dot_host(n, ones.data(), ones.data(), Device::cpu), double(n));
  // Products are exact in double: (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 is not a float, but is a
  // double, and the sum keeps it.
  const float v = 1.f + std::ldexp(1.f, -12);
  std::vector<float> x(3, v);
  EXPECT_EQ(vec::dot_host(3, x.data(), x.data(), Device::cpu),
            3 * (1 + std::ldexp(1.0, -11) + std::ldexp(1.0, -24)));
}

TEST(vec_ops, AliasingIsElementWise) {
  std::vector<float> x = {1, -2, 3};
  vec::axpy(3, 2.f, x.data(), x.data(), Device::cpu);  // x += 2x
  EXPECT_EQ(x, (std::vector<float>{3, -6, 9}));
  vec::affine(3, 0.5f, 1.f, x.data(), x.data(), Device::cpu);  // in place
  EXPECT_EQ(x, (std::vector<float>{2.5f, -2, 5.5f}));
  vec::axpby(3, 1.f, x.data(), 1.f, x.data(), Device::cpu);
  EXPECT_EQ(x, (std::vector<float>{5, -4, 11}));
}

TEST(vec_ops, AxpbyWithZeroBetaDoesNotReadY) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1, 2}, y = {nan, inf};
  vec::axpby(2, -0.5f, x.data(), 0.f, y.data(), Device::cpu);
  EXPECT_EQ(y, (std::vector<float>{-0.5f, -1}));
  // A non-zero b does read it, and NaN propagates.
  y = {nan, 1};
  vec::axpby(2, 1.f, x.data(), 1e-30f, y.data(), Device::cpu);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 2.f);
  // scale by 0 keeps a NaN visible.
  vec::scale(2, 0.f, y.data(), Device::cpu);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 0.f);
}

TEST(vec_ops, CountNonfiniteAccumulates) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x = {1, nan, -inf, 0, inf, std::numeric_limits<float>::max(), -0.f};
  unsigned long long count = 0;
  vec::count_nonfinite(int64_t(x.size()), x.data(), &count, Device::cpu);
  EXPECT_EQ(count, 3u);
  vec::count_nonfinite(2, x.data(), &count, Device::cpu);  // adds, does not overwrite
  EXPECT_EQ(count, 4u);
  std::vector<double> xd = {std::numeric_limits<double>::denorm_min(), -HUGE_VAL, 1e308};
  count = 0;
  vec::count_nonfinite(3, xd.data(), &count, Device::cpu);
  EXPECT_EQ(count, 1u);
}

TEST(vec_ops, EmptyVectors) {
  // n == 0 touches nothing (null pointers are fine) and dot writes 0.
  float* none = nullptr;
  vec::axpy(0, 1.f, none, none, Device::cpu);
  vec::fill(0, 1.f, none, Device::cpu);
  double out = 42;
  vec::dot(0, none, none, &out, Device::cpu);
  EXPECT_EQ(out, 0.0);
  EXPECT_EQ(vec::dot_host(0, none, none, Device::cpu), 0.0);
  unsigned long long count = 5;
  vec::count_nonfinite(0, none, &count, Device::cpu);
  EXPECT_EQ(count, 5u);
}

TEST(vec_ops, BadArgumentsRejected) {
  std::vector<float> x(4, 1.f);
  std::vector<double> xd(4, 1.0);
  double out = 0;
  test::expect_input_error([&] { vec::axpy(-1, 1.f, x.data(), x.data(), Device::cpu); },
                           "negative length");
  test::expect_input_error([&] { vec::axpy<float>(4, 1.f, nullptr, x.data(), Device::cpu); },
                           "null");
  test::expect_input_error([&] { vec::scale(4, 1.f, static_cast<float*>(nullptr), Device::cpu); },
                           "null");
  test::expect_input_error([&] { vec::dot(4, x.data(), x.data(), nullptr, Device::cpu); },
                           "null output");
  test::expect_input_error([&] { vec::count_nonfinite(4, x.data(), nullptr, Device::cpu); },
                           "null count");
  // double is CPU only, whether or not this build has CUDA.
  test::expect_input_error([&] { vec::axpy(4, 1.0, xd.data(), xd.data(), Device::cuda); },
                           "float only");
  test::expect_input_error([&] { vec::dot(4, xd.data(), xd.data(), &out, Device::cuda); },
                           "float only");
  if (!cuda_compiled())
    test::expect_input_error([&] { vec::fill(4, 1.f, x.data(), Device::cuda); }, "no CUDA");
}

}  // namespace
}  // namespace mirad
