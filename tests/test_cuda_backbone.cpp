// CUDA backbone against the CPU: every op (the shared conv and pool cases, odd sizes, every
// padding mode) through the cuDNN backend, each custom kernel against its CPU reference, the
// head, taps, plan and arena reuse, and the whole MobileNetV2; outputs are written into the
// middle of sentinel-filled buffers to catch out-of-bounds writes. Skips without a device.
// Suite names start with "cuda_backbone" so that ctest -R backbone selects them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "shared_fixtures.h"
#include "backbone_test_util.h"
#include "cuda_diff.h"
#include "kernels/backbone_ops.h"

namespace fs = std::filesystem;

namespace mirad {
namespace {

using namespace bbtest;

#define SKIP_WITHOUT_DEVICE() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device available"

// A device buffer of n floats with sentinels on each side (tests/cuda_diff.h); 257 is odd, so
// misaligned writes past the end land on it too.
using Guarded = test::Guarded<float, 257>;

// Runs op `tap` on the CUDA backbone into a guarded buffer; returns the checked host copy.
std::vector<float> run_cuda(Backbone& bb, const std::vector<float>& x, const TensorShape& shape,
                            int tap, const std::string& what) {
  auto in = Buffer<float>::from_host(x, Device::cuda);
  const int taps[] = {tap};
  Guarded out(bb.tap_shapes(shape, taps)[0].numel());
  float* outs[] = {out.data()};
  bb.forward_into(in.data(), shape, taps, outs);
  mem::synchronize(bb.stream());
  return out.body(what);
}

class cuda_backbone_conv : public ::testing::TestWithParam<ConvCase> {};

TEST_P(cuda_backbone_conv, MatchesNaiveReferenceAndCpu) {
  SKIP_WITHOUT_DEVICE();
  const ConvCase& k = GetParam();
  const SafeTensors w = conv_weights(k, 7);
  const TensorShape shape{k.n, k.c, k.h, k.w, 4};
  const std::vector<float> x = random_vector(shape.numel(), 11, -2.f, 2.f);
  Backbone gpu = make_backbone(conv_graph_json(k), w, Device::cuda);
  Backbone cpu = make_backbone(conv_graph_json(k), w, Device::cpu);
  const std::vector<float> got = run_cuda(gpu, x, shape, 0, k.name);
  // FMA math (no TF32): any algorithm (GEMM, Winograd, FFT) stays within float32 rounding of
  // the sum of |terms|, with slack for the transforms; a wrong pad or stride is off by O(1).
  EXPECT_EQ(expect_close(got, conv_reference(k, x, w), 1e-4, 1e-5, k.name + " vs reference"), 0);
  RefOut cpu_ref = conv_reference(k, x, w);
  cpu_ref.y = run_tap(cpu, x, shape, 0);
  EXPECT_EQ(expect_close(got, cpu_ref, 1e-4, 1e-5, k.name + " vs cpu"), 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, cuda_backbone_conv, ::testing::ValuesIn(conv_cases()),
                         [](const auto& info) { return info.param.name; });

class cuda_backbone_pool : public ::testing::TestWithParam<PoolCase> {};

TEST_P(cuda_backbone_pool, MatchesNaiveReference) {
  SKIP_WITHOUT_DEVICE();
  const PoolCase& k = GetParam();
  Backbone gpu = make_backbone(pool_graph_json(k), SafeTensors(), Device::cuda);
  const TensorShape shape{k.n, k.c, k.h, k.w, 4};
  const std::vector<float> x = random_vector(shape.numel(), 3, -5.f, -1.f);
  EXPECT_EQ(
      expect_close(run_cuda(gpu, x, shape, 0, k.name), pool_reference(k, x), 1e-6, 1e-6, k.name),
      0);
}

INSTANTIATE_TEST_SUITE_P(Cases, cuda_backbone_pool, ::testing::ValuesIn(pool_cases()),
                         [](const auto& info) { return info.param.name; });

// Every output of a graph on CUDA equals the CPU's, tap by tap, guarded.
void expect_graph_matches_cpu(const std::string& json, const SafeTensors& w,
                              const TensorShape& shape, double tol) {
  Backbone gpu = make_backbone(json, w, Device::cuda);
  Backbone cpu = make_backbone(json, w, Device::cpu);
  const std::vector<float> x = random_vector(shape.numel(), 5, -8.f, 8.f);
  auto in = Buffer<float>::from_host(x, Device::cuda);
  std::vector<int> taps(gpu.n_ops());
  for (int i = 0; i < gpu.n_ops(); ++i) taps[i] = i;
  const auto shapes = gpu.tap_shapes(shape, taps);
  std::vector<Guarded> outs;
  std::vector<float*> ptrs;
  for (const auto& s : shapes) outs.emplace_back(s.numel());
  for (auto& g : outs) ptrs.push_back(g.data());
  gpu.forward_into(in.data(), shape, taps, ptrs);
  mem::synchronize(gpu.stream());
  const auto want = cpu.forward(x.data(), shape, taps);
  for (std::size_t t = 0; t < taps.size(); ++t) {
    const std::vector<float> got = outs[t].body("op " + std::to_string(t));
    const std::vector<float> ref = want[t].data.to_host();
    ASSERT_EQ(got.size(), ref.size());
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], ref[i], tol * (1 + std::abs(ref[i]))) << "op " << t << " element " << i;
  }
}

TEST(cuda_backbone, AddAndActivationsMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  expect_graph_matches_cpu(kActsJson, SafeTensors(), TensorShape{3, 5, 7, 9, 4}, 0.0);
}

TEST(cuda_backbone, ChainAndHeadMatchCpu) {
  SKIP_WITHOUT_DEVICE();
  expect_graph_matches_cpu(kChainJson, chain_weights(), TensorShape{3, 3, 17, 13, 4}, 2e-5);
  // Softmax over channels of an NCHW map, and over a flattened FC output.
  const std::string json = R"({"input": "x", "output": "p2", "ops": [
      {"op": "SOFTMAX", "inputs": ["x"], "output": "p"},
      {"op": "RESHAPE", "inputs": ["p", "shape"], "output": "f"},
      {"op": "FULLY_CONNECTED", "inputs": ["f"], "output": "z", "weight": "fw", "bias": "fb",
       "act": "relu6"},
      {"op": "SOFTMAX", "inputs": ["z"], "output": "p2"}]})";
  std::map<std::string, HostTensor> t;
  t["fw"] = {{37, 5 * 3 * 7}, random_vector(37 * 105, 1, -4.f, 4.f)};
  t["fb"] = {{37}, random_vector(37, 2)};
  expect_graph_matches_cpu(json, SafeTensors("head", t, {}), TensorShape{2, 5, 3, 7, 4}, 2e-5);
}

TEST(cuda_backbone, PlansAndArenaAreReused) {
  SKIP_WITHOUT_DEVICE();
  Backbone gpu = make_backbone(kChainJson, chain_weights(), Device::cuda);
  const TensorShape shape{2, 3, 31, 29, 4};
  const std::vector<float> x = random_vector(shape.numel(), 2);
  const auto a = run_tap(gpu, x, shape, 3);
  const std::size_t arena = gpu.arena_bytes();
  const auto b = run_tap(gpu, x, shape, 3);
  EXPECT_EQ(a, b) << "the same input must give the same features";
  EXPECT_EQ(gpu.n_plans(), 1u);
  EXPECT_EQ(gpu.arena_bytes(), arena);
  run_tap(gpu, x, TensorShape{1, 3, 31, 29, 4}, 3);  // smaller: a new plan, same arena
  EXPECT_EQ(gpu.n_plans(), 2u);
  EXPECT_EQ(gpu.arena_bytes(), arena);
}

// ---- each custom kernel against its CPU reference, guarded, odd sizes ----

template <typename Launch>
std::vector<float> guarded_kernel(int64_t n_out, Launch&& launch, const std::string& what) {
  Guarded out(n_out);
  launch(out.data());
  mem::synchronize({});
  return out.body(what);
}

TEST(cuda_backbone_kernels, MatchCpuReferences) {
#ifndef MIRAD_HAVE_CUDA
  GTEST_SKIP() << "this build has no CUDA backend";
#else
  SKIP_WITHOUT_DEVICE();
  const int64_t N = 3, C = 7, H = 13, W = 11, count = N * C * H * W;
  const std::vector<float> xh = random_vector(count, 1, -9.f, 9.f);
  const std::vector<float> bh = random_vector(count, 2, -9.f, 9.f);
  const std::vector<float> biash = random_vector(C, 3);
  auto x = Buffer<float>::from_host(xh, Device::cuda);
  auto bx = Buffer<float>::from_host(bh, Device::cuda);
  auto bias = Buffer<float>::from_host(biash, Device::cuda);

  {  // pad with asymmetric pads
    const Pads p{0, 1, 2, 1};
    const int64_t n = N * C * (H + 1) * (W + 3);
    std::vector<float> want(n);
    bbops::pad_cpu(N, C, H, W, p, 0.f, xh.data(), want.data());
    const auto got = guarded_kernel(
        n, [&](float* y) { bbops::pad_cuda(N, C, H, W, p, 0.f, x.data(), y, {}); }, "pad");
    EXPECT_EQ(got, want);
  }
  for (int act : {bbops::kActNone, bbops::kActRelu, bbops::kActRelu6}) {
    std::vector<float> want = xh;
    bbops::bias_act_cpu(N, C, H * W, biash.data(), act, want.data());
    const auto got = guarded_kernel(
        count,
        [&](float* y) {
          mem::copy(y, Device::cuda, x.data(), Device::cuda, count * sizeof(float), {});
          bbops::bias_act_cuda(N, C, H * W, bias.data(), act, y, {});
        },
        "bias_act");
    EXPECT_EQ(got, want) << "act " << act;

    std::vector<float> sum(count), a(count);
    bbops::add_act_cpu(count, xh.data(), bh.data(), act, sum.data());
    bbops::act_cpu(count, xh.data(), act, a.data());
    EXPECT_EQ(
        guarded_kernel(
            count, [&](float* y) { bbops::add_act_cuda(count, x.data(), bx.data(), act, y, {}); },
            "add_act"),
        sum)
        << "act " << act;
    EXPECT_EQ(guarded_kernel(
                  count, [&](float* y) { bbops::act_cuda(count, x.data(), act, y, {}); }, "act"),
              a)
        << "act " << act;
  }
  for (bool max : {true, false})
    for (bool include : {false, true}) {
      const bbops::PoolGeom g{N, C, H, W, 3, 2, 2, 1, Pads{1, 1, 0, 1}, 7, 11, include};
      std::vector<float> want(N * C * 7 * 11);
      (max ? bbops::max_pool_cpu : bbops::avg_pool_cpu)(g, xh.data(), want.data());
      const auto got = guarded_kernel(
          want.size(),
          [&](float* y) {
            (max ? bbops::max_pool_cuda : bbops::avg_pool_cuda)(g, x.data(), y, {});
          },
          "pool");
      for (std::size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5f) << (max ? "max" : "avg") << " " << i;
    }
  {
    std::vector<float> want(N * C);
    bbops::global_avg_pool_cpu(N * C, H * W, xh.data(), want.data());
    const auto got = guarded_kernel(
        N * C, [&](float* y) { bbops::global_avg_pool_cuda(N * C, H * W, x.data(), y, {}); },
        "global_avg_pool");
    for (int64_t i = 0; i < N * C; ++i) EXPECT_NEAR(got[i], want[i], 1e-5f) << i;
  }
  for (auto [outer, c, inner] :
       {std::tuple<int64_t, int64_t, int64_t>{N, C, H * W}, {5, 1001, 1}, {2, 3, 37}}) {
    const std::vector<float> s = random_vector(outer * c * inner, 4, -10.f, 10.f);
    auto sd = Buffer<float>::from_host(s, Device::cuda);
    std::vector<float> want(s.size());
    bbops::softmax_cpu(outer, c, inner, s.data(), want.data());
    const auto got = guarded_kernel(
        s.size(), [&](float* y) { bbops::softmax_cuda(outer, c, inner, sd.data(), y, {}); },
        "softmax");
    for (std::size_t i = 0; i < s.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6f + 1e-5f * want[i]) << "softmax c=" << c << " " << i;
  }
#endif
}

// ---- the whole MobileNetV2 ----

TEST(cuda_backbone_mobilenet, MatchesCpuAtTapsAndOutput) {
  SKIP_WITHOUT_DEVICE();
  const fs::path dir = mirad::test::mobilenet_v2_dir();
  if (!fs::exists(dir / "graph.json"))
    GTEST_SKIP() << "no MobileNetV2 weights at " << dir << " (set MIRAD_SHARED)";
  Backbone gpu(dir, Device::cuda), cpu(dir, Device::cpu);
  // Whole graph at 224 (batch 3), then feature taps at an odd size.
  struct Run {
    TensorShape shape;
    std::vector<int> taps;
  };
  const Run runs[] = {{{3, 3, 224, 224, 4}, {9, 20, 46, 65}},
                      {{2, 3, 227, 193, 4}, {3, 9, 20, 46}}};
  for (const Run& r : runs) {
    // Uniform in [-1, 1], the range of (u8 - 128) / 128 inputs.
    std::vector<float> x = random_vector(r.shape.numel(), 9, -1.f, 1.f);
    auto in = Buffer<float>::from_host(x, Device::cuda);
    const auto shapes = gpu.tap_shapes(r.shape, r.taps);
    std::vector<Guarded> outs;
    std::vector<float*> ptrs;
    for (const auto& s : shapes) outs.emplace_back(s.numel());
    for (auto& g : outs) ptrs.push_back(g.data());
    gpu.forward_into(in.data(), r.shape, r.taps, ptrs);
    mem::synchronize(gpu.stream());
    const auto want = cpu.forward(x.data(), r.shape, r.taps);
    for (std::size_t t = 0; t < r.taps.size(); ++t) {
      const auto got = outs[t].body("tap " + std::to_string(r.taps[t]));
      const auto ref = want[t].data.to_host();
      double max_ref = 0, max_diff = 0;
      for (std::size_t i = 0; i < ref.size(); ++i) {
        ASSERT_TRUE(std::isfinite(got[i])) << "tap " << r.taps[t] << " element " << i;
        const double d = double(got[i]) - ref[i];
        max_ref = std::max(max_ref, double(std::abs(ref[i])));
        max_diff = std::max(max_diff, std::abs(d));
      }
      // 50+ layers of float32 in different summation orders (and Winograd/FFT algorithms):
      // legitimate differences are ~1e-6 of the tap's scale; a wrong pad, stride or layout
      // shows as 1e-2 and more.
      EXPECT_LT(max_diff, 2e-3 * max_ref)
          << "tap " << r.taps[t] << " " << shapes[t].str() << " max |ref| " << max_ref;
      EXPECT_LT(test::normalised_error(got, ref), 1e-4) << "tap " << r.taps[t] << " relative L2";
    }
    if (r.taps.back() == 65) {
      const auto got = outs.back().body("probs");
      const auto ref = want.back().data.to_host();
      for (int64_t n = 0; n < r.shape.n; ++n) {
        const auto g0 = got.begin() + n * 1001, r0 = ref.begin() + n * 1001;
        EXPECT_EQ(std::max_element(g0, g0 + 1001) - g0, std::max_element(r0, r0 + 1001) - r0)
            << "top-1 of image " << n;
      }
    }
  }
}

TEST(cuda_backbone_mobilenet, Tf32OptionStaysClose) {
  SKIP_WITHOUT_DEVICE();
  const fs::path dir = mirad::test::mobilenet_v2_dir();
  if (!fs::exists(dir / "graph.json"))
    GTEST_SKIP() << "no MobileNetV2 weights at " << dir << " (set MIRAD_SHARED)";
  BackboneOptions opt;
  opt.precision = BackbonePrecision::tf32;
  Backbone gpu(dir, Device::cuda, {}, opt), cpu(dir, Device::cpu);
  const TensorShape shape{2, 3, 224, 224, 4};
  const std::vector<float> x = random_vector(shape.numel(), 4, -1.f, 1.f);
  const int taps[] = {46};
  const auto got = run_tap(gpu, x, shape, 46);
  const auto ref = cpu.forward(x.data(), shape, taps)[0].data.to_host();
  ASSERT_EQ(got.size(), ref.size());
  // TF32 rounds inputs to 10 mantissa bits: ~1e-3 relative, in norm.
  EXPECT_LT(test::normalised_error(got, ref), 1e-2);
}

}  // namespace
}  // namespace mirad
