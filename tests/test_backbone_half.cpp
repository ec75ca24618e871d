// The 16-bit backbone's CPU references (kernels/backbone_ops_half.h): the FP16 / BF16 rounding
// against hand-computed bit patterns and against brute force over every representable value,
// and each NHWC op against the float32 NCHW op it stands for, rounded once. The CUDA kernels are
// checked against these in test_cuda_backbone.
#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/backbone_ops.h"
#include "kernels/backbone_ops_half.h"

namespace mirad::bbops {
namespace {

float pow2(int e) { return std::ldexp(1.f, e); }

TEST(BackboneHalf, Fp16RoundingByHand) {
  const Half t = Half::fp16;
  EXPECT_EQ(to_half_bits(t, 1.f), 0x3c00);
  EXPECT_EQ(to_half_bits(t, -2.f), 0xc000);
  EXPECT_EQ(to_half_bits(t, 0.f), 0x0000);
  EXPECT_EQ(to_half_bits(t, -0.f), 0x8000);
  EXPECT_EQ(to_half_bits(t, 65504.f), 0x7bff);            // the largest finite FP16
  EXPECT_EQ(to_half_bits(t, 65519.99f), 0x7bff);          // below the midpoint to 65536
  EXPECT_EQ(to_half_bits(t, 65520.f), 0x7c00);            // the midpoint rounds to even: inf
  EXPECT_EQ(to_half_bits(t, -1e6f), 0xfc00);
  EXPECT_EQ(to_half_bits(t, INFINITY), 0x7c00);
  EXPECT_EQ(to_half_bits(t, 1.f + pow2(-11)), 0x3c00);    // tie, 0x3c00 is even
  EXPECT_EQ(to_half_bits(t, 1.f + 3 * pow2(-11)), 0x3c02);  // tie between 0x3c01 and 0x3c02
  EXPECT_EQ(to_half_bits(t, 1.f + pow2(-11) + pow2(-20)), 0x3c01);  // just above the tie
  EXPECT_EQ(to_half_bits(t, pow2(-14)), 0x0400);          // the smallest normal
  EXPECT_EQ(to_half_bits(t, pow2(-14) - pow2(-25)), 0x0400);  // 1023.5 units: to even, 1024
  EXPECT_EQ(to_half_bits(t, pow2(-24)), 0x0001);          // the smallest subnormal
  EXPECT_EQ(to_half_bits(t, pow2(-25)), 0x0000);          // tie with zero: zero is even
  EXPECT_EQ(to_half_bits(t, 1.5f * pow2(-25)), 0x0001);
  EXPECT_EQ(to_half_bits(t, 3 * pow2(-25)), 0x0002);      // 1.5 units: to even, 2
  EXPECT_EQ(to_half_bits(t, 1e-10f), 0x0000);
  EXPECT_EQ(to_half_bits(t, FLT_MIN / 2), 0x0000);        // a float subnormal
  EXPECT_TRUE(std::isnan(round_to_half(t, NAN)));
  EXPECT_EQ(from_half_bits(t, 0x0001), pow2(-24));
  EXPECT_EQ(from_half_bits(t, 0x7bff), 65504.f);
  EXPECT_EQ(from_half_bits(t, 0x3555), 0.333251953125f);
  EXPECT_EQ(from_half_bits(t, 0xfc00), -INFINITY);
  EXPECT_TRUE(std::isnan(from_half_bits(t, 0x7e00)));
}

TEST(BackboneHalf, Bf16RoundingByHand) {
  const Half t = Half::bf16;
  EXPECT_EQ(to_half_bits(t, 1.f), 0x3f80);
  EXPECT_EQ(to_half_bits(t, -0.f), 0x8000);
  EXPECT_EQ(to_half_bits(t, 1.f + pow2(-8)), 0x3f80);           // tie, even
  EXPECT_EQ(to_half_bits(t, 1.f + 3 * pow2(-8)), 0x3f82);       // tie, to the even 0x3f82
  EXPECT_EQ(to_half_bits(t, 1.f + pow2(-8) + pow2(-20)), 0x3f81);
  EXPECT_EQ(to_half_bits(t, FLT_MAX), 0x7f80);                  // rounds past the top: inf
  EXPECT_EQ(to_half_bits(t, 3.0e38f), 0x7f62);
  EXPECT_EQ(to_half_bits(t, pow2(-130)), 0x0008);  // float subnormals are kept: 2^19 units of 2^-149
  EXPECT_TRUE(std::isnan(round_to_half(t, NAN)));
  EXPECT_EQ(from_half_bits(t, 0x3f81), 1.f + pow2(-7));
  EXPECT_EQ(from_half_bits(t, 0xff80), -INFINITY);
}

// Every finite pattern decodes to a value that encodes back to itself, and a float between two
// neighbours goes to the nearer (to the even one on a tie): brute force over all 2^16 patterns.
TEST(BackboneHalf, RoundingIsNearestEvenOverEveryPattern) {
  for (Half t : {Half::fp16, Half::bf16}) {
    const char* name = t == Half::fp16 ? "fp16" : "bf16";
    for (uint32_t b = 0; b < 0x10000; ++b) {
      const float v = from_half_bits(t, uint16_t(b));
      if (std::isnan(v)) continue;
      ASSERT_EQ(to_half_bits(t, v), b) << name << " pattern " << b;
      // The next pattern up in magnitude (same sign): midpoints and just either side of them.
      if ((b & 0x7fff) >= (t == Half::fp16 ? 0x7bffu : 0x7f7fu)) continue;
      const float up = from_half_bits(t, uint16_t(b + 1));
      const double mid = (double(v) + up) / 2;
      if (std::abs(mid) > FLT_MAX || float(mid) != mid) continue;  // not exact in float
      const float m = float(mid);
      const uint16_t even = (b & 1u) ? uint16_t(b + 1) : uint16_t(b);
      ASSERT_EQ(to_half_bits(t, m), even) << name << " midpoint above " << b;
      ASSERT_EQ(to_half_bits(t, std::nextafter(m, v)), b) << name << " below mid " << b;
      ASSERT_EQ(to_half_bits(t, std::nextafter(m, up)), b + 1) << name << " above mid " << b;
    }
  }
}

// Random values already representable in t, so that only the op's own rounding remains.
std::vector<uint16_t> random_half(Half t, std::size_t n, uint32_t seed, float lo, float hi) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<uint16_t> v(n);
  for (auto& x : v) x = to_half_bits(t, u(rng));
  return v;
}

std::vector<float> decode_nchw(Half t, const std::vector<uint16_t>& nhwc, int64_t n, int64_t c,
                               int64_t h, int64_t w) {
  std::vector<float> out(nhwc.size());
  nhwc_half_to_float_cpu(t, n, c, h, w, nhwc.data(), out.data());
  return out;
}

std::vector<uint16_t> encode_nhwc(Half t, const std::vector<float>& nchw, int64_t n, int64_t c,
                                  int64_t h, int64_t w) {
  std::vector<uint16_t> out(nchw.size());
  to_nhwc_half_cpu(t, n, c, h, w, nchw.data(), out.data());
  return out;
}

TEST(BackboneHalf, LayoutChangesByHand) {
  // One image, 2 channels, 1 x 3: NCHW [1 2 3 | 4 5 6] is NHWC [1 4 2 5 3 6].
  const std::vector<float> nchw = {1, 2, 3, 4, 5, 6};
  const auto nhwc = encode_nhwc(Half::fp16, nchw, 1, 2, 1, 3);
  const std::vector<float> want = {1, 4, 2, 5, 3, 6};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(from_half_bits(Half::fp16, nhwc[i]), want[i]) << i;
  EXPECT_EQ(decode_nchw(Half::fp16, nhwc, 1, 2, 1, 3), nchw);
  std::vector<uint16_t> back(6);
  nhwc_to_nchw_half_cpu(Half::fp16, 1, 2, 1, 3, nhwc.data(), back.data());
  for (int i = 0; i < 6; ++i) EXPECT_EQ(from_half_bits(Half::fp16, back[i]), nchw[i]) << i;
  // Rounding on the way in: 1/3 is not representable.
  EXPECT_EQ(from_half_bits(Half::fp16, encode_nhwc(Half::fp16, {1.f / 3}, 1, 1, 1, 1)[0]),
            0.333251953125f);
}

// An overflow must not pass for a feature: FP16's inf, which relu6 would clamp to 6 and relu
// keep, becomes NaN in every op that applies an activation.
TEST(BackboneHalf, OverflowBecomesNanNotAClampedFeature) {
  const Half t = Half::fp16;
  const std::vector<float> bias = {100.f};
  for (int act : {kActNone, kActRelu, kActRelu6}) {
    // 65504 + 100 in float is finite, but y itself is inf after a conv that overflowed.
    std::vector<uint16_t> y = {to_half_bits(t, INFINITY), to_half_bits(t, -INFINITY),
                               to_half_bits(t, 3.f)};
    bias_act_nhwc_half_cpu(t, 3, 1, bias.data(), act, y.data());
    EXPECT_TRUE(std::isnan(from_half_bits(t, y[0]))) << "act " << act;
    EXPECT_TRUE(std::isnan(from_half_bits(t, y[1]))) << "act " << act;
    EXPECT_EQ(from_half_bits(t, y[2]), activate(103.f, act)) << "act " << act;
    const std::vector<uint16_t> a = {to_half_bits(t, INFINITY), to_half_bits(t, 1.f)};
    const std::vector<uint16_t> b = {to_half_bits(t, 1.f), to_half_bits(t, 2.f)};
    std::vector<uint16_t> out(2);
    add_act_half_cpu(t, 2, a.data(), b.data(), act, out.data());
    EXPECT_TRUE(std::isnan(from_half_bits(t, out[0]))) << "add, act " << act;
    EXPECT_EQ(from_half_bits(t, out[1]), activate(3.f, act)) << "add, act " << act;
    act_half_cpu(t, 2, a.data(), act, out.data());
    EXPECT_TRUE(std::isnan(from_half_bits(t, out[0]))) << "act " << act;
  }
  // A large but finite sum is not an overflow: relu6 clamps it as in FP32.
  const std::vector<uint16_t> big = {to_half_bits(t, 60000.f)};
  std::vector<uint16_t> out(1);
  add_act_half_cpu(t, 1, big.data(), big.data(), kActRelu6, out.data());
  EXPECT_EQ(from_half_bits(t, out[0]), 6.f);
}

// Each NHWC op equals the float32 NCHW op on the decoded input, each result rounded once.
TEST(BackboneHalf, NhwcOpsEqualTheFloatOpsRounded) {
  const int64_t N = 2, C = 5, H = 7, W = 6, count = N * C * H * W;
  for (Half t : {Half::fp16, Half::bf16}) {
    const char* name = t == Half::fp16 ? "fp16" : "bf16";
    const auto x = random_half(t, count, 1, -7.f, 7.f), b = random_half(t, count, 2, -7.f, 7.f);
    const auto xf = decode_nchw(t, x, N, C, H, W), bf = decode_nchw(t, b, N, C, H, W);
    auto rounded = [&](std::vector<float> v) {
      for (float& e : v) e = round_to_half(t, e);
      return v;
    };
    auto expect_same = [&](const std::vector<uint16_t>& got, const std::vector<float>& want_nchw,
                           int64_t n, int64_t c, int64_t h, int64_t w, const char* op) {
      ASSERT_EQ(decode_nchw(t, got, n, c, h, w), rounded(want_nchw)) << name << " " << op;
    };
    {
      const Pads p{1, 0, 2, 1};
      std::vector<float> want(N * C * (H + 1) * (W + 3));
      pad_cpu(N, C, H, W, p, 0.f, xf.data(), want.data());
      std::vector<uint16_t> got(want.size());
      pad_nhwc_half_cpu(t, N, C, H, W, p, 0.f, x.data(), got.data());
      expect_same(got, want, N, C, H + 1, W + 3, "pad");
    }
    std::vector<float> bias = {0.5f, -1.25f, 3.f, 0.1f, -0.3f};
    for (int act : {kActNone, kActRelu, kActRelu6}) {
      std::vector<float> want = xf;
      bias_act_cpu(N, C, H * W, bias.data(), act, want.data());
      std::vector<uint16_t> got = x;
      bias_act_nhwc_half_cpu(t, count, C, bias.data(), act, got.data());
      expect_same(got, want, N, C, H, W, "bias_act");

      add_act_cpu(count, xf.data(), bf.data(), act, want.data());
      add_act_half_cpu(t, count, x.data(), b.data(), act, got.data());
      expect_same(got, want, N, C, H, W, "add_act");

      act_cpu(count, xf.data(), act, want.data());
      act_half_cpu(t, count, x.data(), act, got.data());
      expect_same(got, want, N, C, H, W, "act");
    }
    for (bool max : {true, false})
      for (bool include : {false, true}) {
        const PoolGeom g{N, C, H, W, 3, 2, 2, 1, Pads{1, 1, 0, 1}, 4, 6, include};
        std::vector<float> want(N * C * 4 * 6);
        (max ? max_pool_cpu : avg_pool_cpu)(g, xf.data(), want.data());
        std::vector<uint16_t> got(want.size());
        (max ? max_pool_nhwc_half_cpu : avg_pool_nhwc_half_cpu)(t, g, x.data(), got.data());
        expect_same(got, want, N, C, 4, 6, max ? "max_pool" : "avg_pool");
      }
    {
      // The float op sums in double; the 16-bit one in float, in the same order: one
      // rounding step of the 16-bit result apart at most.
      std::vector<float> want(N * C);
      global_avg_pool_cpu(N * C, H * W, xf.data(), want.data());
      std::vector<uint16_t> got(N * C);
      global_avg_pool_nhwc_half_cpu(t, N, H * W, C, x.data(), got.data());
      for (int64_t i = 0; i < N * C; ++i) {
        const float r = round_to_half(t, want[i]), g = from_half_bits(t, got[i]);
        const float ulp = std::abs(from_half_bits(t, uint16_t(to_half_bits(t, r) + 1)) - r);
        EXPECT_LE(std::abs(g - r), ulp) << name << " global pool " << i;
      }
    }
    {
      // NHWC channels are softmax(outer = n*h*w, c, inner = 1).
      std::vector<float> want(count);
      softmax_cpu(N, C, H * W, xf.data(), want.data());
      std::vector<uint16_t> got(count);
      softmax_half_cpu(t, N * H * W, C, 1, x.data(), got.data());
      expect_same(got, want, N, C, H, W, "softmax");
    }
  }
}

}  // namespace
}  // namespace mirad::bbops
