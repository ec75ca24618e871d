// The 16-bit CUDA backbone (FP16 / BF16, NHWC): each kernel against its CPU reference
// (kernels/backbone_ops_half_cpu.cpp) bit for bit where the math is the same, with sentinels
// around every output; convolutions, pools and whole graphs against the float64 references and
// the FP32 CPU backend within the 16-bit rounding; and MobileNetV2, where the option must change
// the features a little (it runs) and not a lot (it is right). Skips without a device.
// Suite names start with "cuda_backbone" so that ctest -R backbone selects them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "backbone_test_util.h"
#include "cuda_diff.h"
#include "kernels/backbone_ops_half.h"
#include "shared_fixtures.h"

namespace fs = std::filesystem;

namespace mirad {
namespace {

using namespace bbtest;
using bbops::Half;

#define SKIP_WITHOUT_DEVICE() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device available"

constexpr Half kHalves[] = {Half::fp16, Half::bf16};
const char* name_of(Half t) { return t == Half::fp16 ? "fp16" : "bf16"; }
BackboneOptions options_for(Half t) {
  BackboneOptions o;
  o.precision = t == Half::fp16 ? BackbonePrecision::fp16 : BackbonePrecision::bf16;
  return o;
}
// Unit roundoff: half the spacing of the significand (FP16 11 bits, BF16 8).
double unit_roundoff(Half t) { return t == Half::fp16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8); }

std::vector<uint16_t> random_half(Half t, std::size_t n, uint32_t seed, float lo, float hi) {
  const std::vector<float> f = random_vector(n, seed, lo, hi);
  std::vector<uint16_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = bbops::to_half_bits(t, f[i]);
  return v;
}

// 16-bit results equal bit for bit, except that any NaN equals any NaN (the CPU's inf - inf is
// a negative NaN, the GPU's a positive one). Returns the number of mismatches.
int64_t expect_same16(Half t, const std::vector<uint16_t>& got, const std::vector<uint16_t>& want,
                      const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  if (got.size() != want.size()) return 1;
  int64_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const float g = bbops::from_half_bits(t, got[i]), w = bbops::from_half_bits(t, want[i]);
    if (got[i] == want[i] || (std::isnan(g) && std::isnan(w))) continue;
    if (bad++ < 5)
      ADD_FAILURE() << what << ": element " << i << " got " << g << " want " << w;
  }
  return bad;
}

#ifdef MIRAD_HAVE_CUDA
// n 16-bit values on the device with sentinels (0xbeef) each side (tests/cuda_diff.h).
using Guarded16 = test::Guarded<uint16_t, 129>;
#endif

TEST(cuda_backbone_half_kernels, MatchCpuReferences) {
#ifndef MIRAD_HAVE_CUDA
  GTEST_SKIP() << "this build has no CUDA backend";
#else
  SKIP_WITHOUT_DEVICE();
  const int64_t N = 3, C = 37, H = 13, W = 11, count = N * C * H * W;
  for (Half t : kHalves) {
    const std::string tn = name_of(t);
    auto xh = random_half(t, count, 1, -9.f, 9.f);
    const auto bh = random_half(t, count, 2, -9.f, 9.f);
    // Overflowed values, as a conv or add would store them: they must become NaN, not 6.
    xh[5] = bbops::to_half_bits(t, INFINITY), xh[count / 2] = bbops::to_half_bits(t, -INFINITY);
    auto x = Buffer<uint16_t>::from_host(xh, Device::cuda);
    auto b = Buffer<uint16_t>::from_host(bh, Device::cuda);
    const std::vector<float> biash = random_vector(C, 3);
    auto bias = Buffer<float>::from_host(biash, Device::cuda);
    auto run = [&](int64_t n_out, auto&& launch, const std::string& what,
                   const std::vector<uint16_t>& init = {}) {
      Guarded16 out(n_out, init);
      launch(out.data());
      mem::synchronize({});
      return out.body(tn + " " + what);
    };
    {  // layouts: float NCHW -> NHWC, NHWC -> float NCHW, NHWC -> NCHW (odd sizes, > 1 tile)
      const std::vector<float> f = random_vector(count, 4, -100.f, 100.f);
      auto fd = Buffer<float>::from_host(f, Device::cuda);
      std::vector<uint16_t> want(count);
      bbops::to_nhwc_half_cpu(t, N, C, H, W, f.data(), want.data());
      EXPECT_EQ(expect_same16(t, run(count, [&](uint16_t* y) { bbops::to_nhwc_half_cuda(t, N, C, H, W, fd.data(), y, {}); },
                    "to_nhwc"),
                want, tn), 0);
      std::vector<float> back(count);
      bbops::nhwc_half_to_float_cpu(t, N, C, H, W, xh.data(), back.data());
      auto out = Buffer<float>::from_host(std::vector<float>(count + 2, -7.f), Device::cuda);
      bbops::nhwc_half_to_float_cuda(t, N, C, H, W, x.data(), out.data(), {});
      std::vector<float> got = out.to_host();
      EXPECT_EQ(got[count], -7.f) << tn << " nhwc_half_to_float wrote past its output";
      got.resize(count);
      EXPECT_EQ(got, back) << tn << " nhwc_half_to_float";
      std::vector<uint16_t> nchw(count);
      bbops::nhwc_to_nchw_half_cpu(t, N, C, H, W, xh.data(), nchw.data());
      EXPECT_EQ(expect_same16(t, run(count, [&](uint16_t* y) { bbops::nhwc_to_nchw_half_cuda(t, N, C, H, W, x.data(), y, {}); },
                    "nhwc_to_nchw"),
                nchw, tn), 0);
    }
    {
      const Pads p{0, 1, 2, 1};
      const int64_t n = N * C * (H + 1) * (W + 3);
      std::vector<uint16_t> want(n);
      bbops::pad_nhwc_half_cpu(t, N, C, H, W, p, 0.f, xh.data(), want.data());
      EXPECT_EQ(expect_same16(t, run(n, [&](uint16_t* y) { bbops::pad_nhwc_half_cuda(t, N, C, H, W, p, 0.f, x.data(), y, {}); },
                    "pad"),
                want, tn), 0);
    }
    for (int act : {bbops::kActNone, bbops::kActRelu, bbops::kActRelu6}) {
      const std::string a = " act " + std::to_string(act);
      std::vector<uint16_t> want = xh;
      bbops::bias_act_nhwc_half_cpu(t, count, C, biash.data(), act, want.data());
      EXPECT_EQ(expect_same16(t, run(count, [&](uint16_t* y) { bbops::bias_act_nhwc_half_cuda(t, count, C, bias.data(), act, y, {}); },
                    "bias_act" + a, xh),
                want, tn), 0);
      bbops::add_act_half_cpu(t, count, xh.data(), bh.data(), act, want.data());
      EXPECT_EQ(expect_same16(t, run(count, [&](uint16_t* y) { bbops::add_act_half_cuda(t, count, x.data(), b.data(), act, y, {}); },
                    "add_act" + a),
                want, tn), 0);
      bbops::act_half_cpu(t, count, xh.data(), act, want.data());
      EXPECT_EQ(expect_same16(t, run(count, [&](uint16_t* y) { bbops::act_half_cuda(t, count, x.data(), act, y, {}); },
                    "act" + a),
                want, tn), 0);
    }
    for (bool max : {true, false})
      for (bool include : {false, true}) {
        const bbops::PoolGeom g{N, C, H, W, 3, 2, 2, 1, Pads{1, 1, 0, 1}, 7, 11, include};
        std::vector<uint16_t> want(N * C * 7 * 11);
        (max ? bbops::max_pool_nhwc_half_cpu : bbops::avg_pool_nhwc_half_cpu)(t, g, xh.data(),
                                                                               want.data());
        EXPECT_EQ(expect_same16(t, run(want.size(),
                      [&](uint16_t* y) {
                        (max ? bbops::max_pool_nhwc_half_cuda : bbops::avg_pool_nhwc_half_cuda)(
                            t, g, x.data(), y, {});
                      },
                      max ? "max_pool" : "avg_pool"),
                  want, tn), 0);
      }
    {  // same summation order as the reference: bit for bit
      std::vector<uint16_t> want(N * C);
      bbops::global_avg_pool_nhwc_half_cpu(t, N, H * W, C, xh.data(), want.data());
      EXPECT_EQ(expect_same16(t, run(N * C, [&](uint16_t* y) { bbops::global_avg_pool_nhwc_half_cuda(t, N, H * W, C, x.data(), y, {}); },
                    "global_avg_pool"),
                want, tn), 0);
    }
    for (auto [outer, c, inner] : {std::tuple<int64_t, int64_t, int64_t>{N * H * W, C, 1},
                                   {5, 1001, 1}, {2, 3, 37}}) {
      const auto s = random_half(t, outer * c * inner, 5, -10.f, 10.f);
      auto sd = Buffer<uint16_t>::from_host(s, Device::cuda);
      std::vector<uint16_t> want(s.size());
      bbops::softmax_half_cpu(t, outer, c, inner, s.data(), want.data());
      const auto got = run(s.size(), [&](uint16_t* y) { bbops::softmax_half_cuda(t, outer, c, inner, sd.data(), y, {}); },
                           "softmax");
      // Warp-order sums and expf: within one 16-bit rounding step of the reference.
      for (std::size_t i = 0; i < s.size(); ++i) {
        const double r = bbops::from_half_bits(t, want[i]), g = bbops::from_half_bits(t, got[i]);
        ASSERT_LE(std::abs(g - r), 2 * unit_roundoff(t) * r + 1e-7) << tn << " softmax c=" << c << " " << i;
      }
    }
  }
#endif
}

// Convolutions (every shared case: groups, depthwise, dilation, strides, TF-SAME pads) against
// the float64 reference: inputs, weights and the output each rounded once, so within a few unit
// roundoffs of the sum of |terms|. A wrong layout or pad is off by O(1).
class cuda_backbone_half_conv : public ::testing::TestWithParam<ConvCase> {};

TEST_P(cuda_backbone_half_conv, MatchesNaiveReference) {
  SKIP_WITHOUT_DEVICE();
  const ConvCase& k = GetParam();
  const SafeTensors w = conv_weights(k, 7);
  const TensorShape shape{k.n, k.c, k.h, k.w, 4};
  const std::vector<float> x = random_vector(shape.numel(), 11, -2.f, 2.f);
  const RefOut ref = conv_reference(k, x, w);
  for (Half t : kHalves) {
    Backbone gpu = make_backbone(conv_graph_json(k), w, Device::cuda, options_for(t));
    const std::vector<float> got = run_tap(gpu, x, shape, 0);
    EXPECT_EQ(expect_close(got, ref, 4 * unit_roundoff(t), 1e-4, k.name + " " + name_of(t)), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, cuda_backbone_half_conv, ::testing::ValuesIn(conv_cases()),
                         [](const auto& info) { return info.param.name; });

class cuda_backbone_half_pool : public ::testing::TestWithParam<PoolCase> {};

TEST_P(cuda_backbone_half_pool, MatchesNaiveReference) {
  SKIP_WITHOUT_DEVICE();
  const PoolCase& k = GetParam();
  const TensorShape shape{k.n, k.c, k.h, k.w, 4};
  const std::vector<float> x = random_vector(shape.numel(), 3, -5.f, -1.f);
  const RefOut ref = pool_reference(k, x);
  for (Half t : kHalves) {
    Backbone gpu = make_backbone(pool_graph_json(k), SafeTensors(), Device::cuda, options_for(t));
    EXPECT_EQ(expect_close(run_tap(gpu, x, shape, 0), ref, 3 * unit_roundoff(t), 1e-6,
                           k.name + " " + name_of(t)),
              0);
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, cuda_backbone_half_pool, ::testing::ValuesIn(pool_cases()),
                         [](const auto& info) { return info.param.name; });

// Every op of a graph on the 16-bit path against the FP32 CPU backend.
void expect_graph_close(const std::string& json, const SafeTensors& w, const TensorShape& shape,
                        double tol_fp16, double tol_bf16) {
  const std::vector<float> x = random_vector(shape.numel(), 5, -4.f, 4.f);
  Backbone cpu = make_backbone(json, w, Device::cpu);
  std::vector<int> taps(cpu.n_ops());
  for (int i = 0; i < cpu.n_ops(); ++i) taps[i] = i;
  const auto want = cpu.forward(x.data(), shape, taps);
  for (Half t : kHalves) {
    Backbone gpu = make_backbone(json, w, Device::cuda, options_for(t));
    auto in = Buffer<float>::from_host(x, Device::cuda);
    const auto got = gpu.forward(in.data(), shape, taps);
    for (std::size_t k = 0; k < taps.size(); ++k) {
      const auto g = got[k].data.to_host(), r = want[k].data.to_host();
      ASSERT_EQ(g.size(), r.size());
      for (float v : g) ASSERT_TRUE(std::isfinite(v)) << name_of(t) << " op " << k;
      EXPECT_LT(test::normalised_error(g, r), t == Half::fp16 ? tol_fp16 : tol_bf16)
          << name_of(t) << " op " << k;
    }
  }
}

TEST(cuda_backbone_half, GraphsMatchCpuWithinRounding) {
  SKIP_WITHOUT_DEVICE();
  expect_graph_close(kActsJson, SafeTensors(), TensorShape{3, 5, 7, 9, 4}, 2e-3, 1.5e-2);
  expect_graph_close(kChainJson, chain_weights(), TensorShape{3, 3, 17, 13, 4}, 5e-3, 4e-2);
  // Softmax over the channels of a spatial map, then RESHAPE of that map (NHWC must become
  // NCHW before it is flattened: 5 channels x 21 positions), FC and softmax.
  const std::string head = R"({"input": "x", "output": "p2", "ops": [
      {"op": "SOFTMAX", "inputs": ["x"], "output": "p"},
      {"op": "RESHAPE", "inputs": ["p", "shape"], "output": "f"},
      {"op": "FULLY_CONNECTED", "inputs": ["f"], "output": "z", "weight": "fw", "bias": "fb"},
      {"op": "SOFTMAX", "inputs": ["z"], "output": "p2"}]})";
  std::map<std::string, HostTensor> t;
  t["fw"] = {{37, 5 * 3 * 7}, random_vector(37 * 105, 1, -1.f, 1.f)};
  t["fb"] = {{37}, random_vector(37, 2)};
  expect_graph_close(head, SafeTensors("head", t, {}), TensorShape{2, 5, 3, 7, 4}, 5e-3, 4e-2);
  // FULLY_CONNECTED straight on a spatial map (no RESHAPE): its weight's K also runs over
  // C*H*W in NCHW order, so the map must be reordered for it as well.
  const std::string fc = R"({"input": "x", "output": "z", "ops": [
      {"op": "SOFTMAX", "inputs": ["x"], "output": "p"},
      {"op": "FULLY_CONNECTED", "inputs": ["p"], "output": "z", "weight": "fw", "bias": "fb"}]})";
  expect_graph_close(fc, SafeTensors("fc", t, {}), TensorShape{2, 5, 3, 7, 4}, 5e-3, 4e-2);
}

TEST(cuda_backbone_half, ArenaIsSmallerThanFp32) {
  SKIP_WITHOUT_DEVICE();
  // No convolution, so no cuDNN workspace on either side: arena_bytes() is the activations
  // alone, 2 bytes each instead of 4, plus the converted input.
  const TensorShape shape{4, 3, 64, 48, 4};
  const std::vector<float> x = random_vector(shape.numel(), 2);
  Backbone f32 = make_backbone(kActsJson, SafeTensors(), Device::cuda);
  run_tap(f32, x, shape, 5);
  for (Half t : kHalves) {
    Backbone h = make_backbone(kActsJson, SafeTensors(), Device::cuda, options_for(t));
    run_tap(h, x, shape, 5);
    EXPECT_LT(h.arena_bytes(), f32.arena_bytes()) << name_of(t);
  }
}

TEST(cuda_backbone_half_mobilenet, StaysCloseToFp32) {
  SKIP_WITHOUT_DEVICE();
  const fs::path dir = mirad::test::mobilenet_v2_dir();
  if (!fs::exists(dir / "graph.json"))
    GTEST_SKIP() << "no MobileNetV2 weights at " << dir << " (set MIRAD_SHARED)";
  Backbone cpu(dir, Device::cpu);
  const TensorShape shape{3, 3, 224, 224, 4};
  const std::vector<float> x = random_vector(shape.numel(), 9, -1.f, 1.f);
  const std::vector<int> taps = {9, 20, 46, 65};
  const auto want = cpu.forward(x.data(), shape, taps);
  for (Half t : kHalves) {
    Backbone gpu(dir, Device::cuda, {}, options_for(t));
    auto in = Buffer<float>::from_host(x, Device::cuda);
    const auto got = gpu.forward(in.data(), shape, taps);
    for (std::size_t k = 0; k < taps.size(); ++k) {
      const auto g = got[k].data.to_host(), r = want[k].data.to_host();
      ASSERT_EQ(g.size(), r.size());
      const double e = test::normalised_error(g, r);
      std::printf("%s tap %d: relative L2 %.3g\n", name_of(t), taps[k], e);
      // 50+ layers, each rounding its output once: a few 1e-3 (FP16) and 1e-2 (BF16). Far
      // below that, the option did nothing; far above, a layout or conversion is wrong.
      EXPECT_GT(e, 1e-5) << name_of(t) << " tap " << taps[k] << ": no rounding at all?";
      EXPECT_LT(e, t == Half::fp16 ? 2e-2 : 8e-2) << name_of(t) << " tap " << taps[k];
    }
  }
}

}  // namespace
}  // namespace mirad
