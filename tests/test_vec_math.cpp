// kernels/vec_math.h against float64 libm: exp and the soft clamp a*tanh(x/a) within a few ULP
// over a wide range and every tail length, with inf and NaN handled as libm does (a NaN feature
// must stay NaN so the flow's checks catch it). Both x86-64 paths (SSE2, AVX2) are checked
// where the CPU has them, and the dispatcher too.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/vec_math.h"

namespace mirad::vec {
namespace {

using ExpFn = std::function<void(const float*, float*, int64_t)>;
using ClampFn = std::function<void(const float*, float, float*, int64_t)>;

struct Impl {
  std::string name;
  ExpFn exp;
  ClampFn clamp;
};

std::vector<Impl> impls() {
  std::vector<Impl> v = {{"dispatch",
                          [](const float* x, float* y, int64_t n) { vec::exp(x, y, n); },
                          [](const float* x, float a, float* y, int64_t n) {
                            vec::soft_clamp(x, a, y, n);
                          }}};
#if defined(__x86_64__) && defined(MIRAD_HAVE_SLEEF)
  v.push_back({"sse2", detail::exp_sse2, detail::soft_clamp_sse2});
  if (detail::avx2_available()) v.push_back({"avx2", detail::exp_avx2, detail::soft_clamp_avx2});
#endif
  return v;
}

// |got - want| in units of float's spacing at want.
double ulps(float got, double want) {
  const double spacing = std::ldexp(1.0, std::ilogb(std::max(std::abs(want), double(FLT_MIN))) - 23);
  return std::abs(double(got) - want) / spacing;
}

TEST(VecMath, ExpWithinTwoUlpOverItsRange) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-87.f, 88.f);
  std::vector<float> x(4099);
  for (float& v : x) v = u(rng);
  x[0] = 0.f, x[1] = -0.f, x[2] = 1e-30f, x[3] = -103.f, x[4] = 88.7f;
  for (const Impl& im : impls()) {
    std::vector<float> y(x.size());
    im.exp(x.data(), y.data(), int64_t(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i)
      ASSERT_LE(ulps(y[i], std::exp(double(x[i]))), 2.0) << im.name << " exp(" << x[i] << ")";
  }
}

TEST(VecMath, SoftClampWithinFourUlp) {
  std::mt19937 rng(2);
  std::uniform_real_distribution<float> u(-30.f, 30.f);
  std::vector<float> x(1031);
  for (float& v : x) v = u(rng);
  x[0] = 0.f, x[1] = 1e-6f, x[2] = -1e-3f, x[3] = 1.9f, x[4] = 200.f;
  for (const Impl& im : impls())
    for (float a : {1.9f, 0.5f, 3.f}) {
      std::vector<float> y(x.size());
      im.clamp(x.data(), a, y.data(), int64_t(x.size()));
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double want = a * std::tanh(double(x[i]) / a);
        ASSERT_LE(ulps(y[i], want), 4.0) << im.name << " a=" << a << " x=" << x[i];
      }
    }
}

// Every length from 0 to 19 (full vectors plus every tail), in place and out of place, and
// nothing written past n.
TEST(VecMath, EveryTailLengthAndAliasing) {
  for (const Impl& im : impls())
    for (int64_t n = 0; n < 20; ++n) {
      std::vector<float> x(n + 1), y(n + 1, -42.f);
      for (int64_t i = 0; i <= n; ++i) x[i] = 0.25f * float(i) - 2.f;
      im.exp(x.data(), y.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_LE(ulps(y[i], std::exp(double(x[i]))), 2.0) << im.name << " n=" << n << " i=" << i;
      EXPECT_EQ(y[n], -42.f) << im.name << " wrote past n=" << n;
      std::vector<float> z = x;
      im.clamp(z.data(), 1.9f, z.data(), n);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_LE(ulps(z[i], 1.9 * std::tanh(double(x[i]) / 1.9)), 4.0) << im.name << " n=" << n;
      EXPECT_EQ(z[n], x[n]) << im.name << " clamp wrote past n=" << n;
    }
}

TEST(VecMath, InfinityAndNanAsLibm) {
  const std::vector<float> x = {INFINITY, -INFINITY, NAN, 1000.f, -1000.f, 1.f, -NAN, 2.f, NAN};
  for (const Impl& im : impls()) {
    std::vector<float> e(x.size()), c(x.size());
    im.exp(x.data(), e.data(), int64_t(x.size()));
    im.clamp(x.data(), 1.9f, c.data(), int64_t(x.size()));
    EXPECT_EQ(e[0], INFINITY) << im.name;
    EXPECT_EQ(e[1], 0.f) << im.name;
    EXPECT_TRUE(std::isnan(e[2]) && std::isnan(e[6]) && std::isnan(e[8])) << im.name;
    EXPECT_EQ(e[3], INFINITY) << im.name << ": overflow";
    EXPECT_EQ(e[4], 0.f) << im.name << ": underflow";
    EXPECT_FLOAT_EQ(c[0], 1.9f) << im.name;
    EXPECT_FLOAT_EQ(c[1], -1.9f) << im.name;
    EXPECT_TRUE(std::isnan(c[2]) && std::isnan(c[6]) && std::isnan(c[8])) << im.name;
    EXPECT_FLOAT_EQ(c[3], 1.9f) << im.name;
  }
}

}  // namespace
}  // namespace mirad::vec
