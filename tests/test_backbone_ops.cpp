// CPU backbone ops against naive nested-loop references: convolutions (dense, grouped,
// depthwise; every padding mode; strides, dilation; odd sizes) on both CPU paths (oneDNN and
// im2col+GEMM), pooling, add, activations, the FC head, taps, the arena, and request errors.
// Suite names start with "backbone" so that ctest -R backbone selects them.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backbone_test_util.h"
#include "core/error.h"
#include "kernels/backbone_ops.h"

namespace mirad {
namespace {

using namespace bbtest;

struct ConvParam {
  ConvCase conv;
  CpuConvAlgo algo;
};

void PrintTo(const ConvParam& p, std::ostream* os) {
  *os << p.conv.name << (p.algo == CpuConvAlgo::gemm ? " gemm" : " onednn");
}

class backbone_ops_conv : public ::testing::TestWithParam<ConvParam> {};

TEST_P(backbone_ops_conv, MatchesNaiveReference) {
  const auto& [k, algo] = GetParam();
  const SafeTensors w = conv_weights(k, 7);
  BackboneOptions opt;
  opt.cpu_conv = algo;
  Backbone bb = make_backbone(conv_graph_json(k), w, Device::cpu, opt);
  const TensorShape shape{k.n, k.c, k.h, k.w, 4};
  // Inputs in [-2, 2] so that relu6 clips some outputs at both ends.
  const std::vector<float> x = random_vector(shape.numel(), 11, -2.f, 2.f);
  const RefOut ref = conv_reference(k, x, w);
  const int taps[] = {0};
  ASSERT_EQ(bb.tap_shapes(shape, taps).at(0), ref.shape);
  EXPECT_EQ(expect_close(run_tap(bb, x, shape, 0), ref, 2e-6, 1e-6, k.name), 0);
}

std::vector<ConvParam> conv_params() {
  std::vector<ConvParam> v;
  for (const ConvCase& c : conv_cases())
    for (CpuConvAlgo a : {CpuConvAlgo::onednn, CpuConvAlgo::gemm}) v.push_back({c, a});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Cases, backbone_ops_conv, ::testing::ValuesIn(conv_params()),
                         [](const auto& info) {
                           return info.param.conv.name +
                                  (info.param.algo == CpuConvAlgo::gemm ? "_gemm" : "_onednn");
                         });

class backbone_ops_pool : public ::testing::TestWithParam<PoolCase> {};

TEST_P(backbone_ops_pool, MatchesNaiveReference) {
  const PoolCase& k = GetParam();
  Backbone bb = make_backbone(pool_graph_json(k), SafeTensors(), Device::cpu);
  const TensorShape shape{k.n, k.c, k.h, k.w, 4};
  // Negative inputs: a max pool that let a zero-padded cell win would show as 0.
  const std::vector<float> x = random_vector(shape.numel(), 3, -5.f, -1.f);
  const RefOut ref = pool_reference(k, x);
  const int taps[] = {0};
  ASSERT_EQ(bb.tap_shapes(shape, taps).at(0), ref.shape);
  EXPECT_EQ(expect_close(run_tap(bb, x, shape, 0), ref, 1e-6, 1e-7, k.name), 0);
}

INSTANTIATE_TEST_SUITE_P(Cases, backbone_ops_pool, ::testing::ValuesIn(pool_cases()),
                         [](const auto& info) { return info.param.name; });

// ADD (with each activation), RELU and RELU6 on an odd shape, values spanning both relu6
// bounds.
TEST(backbone_ops, AddAndActivations) {
  const TensorShape shape{2, 5, 7, 3, 4};
  const std::string json = R"({"input": "x", "output": "r6", "ops": [
      {"op": "RELU", "inputs": ["x"], "output": "r"},
      {"op": "RELU6", "inputs": ["x"], "output": "r6a"},
      {"op": "ADD", "inputs": ["x", "r"], "output": "s"},
      {"op": "ADD", "inputs": ["x", "r6a"], "output": "s_relu", "act": "relu"},
      {"op": "ADD", "inputs": ["s", "x"], "output": "s_relu6", "act": "relu6"},
      {"op": "ADD", "inputs": ["s_relu6", "s_relu"], "output": "r6", "act": "none"}]})";
  Backbone bb = make_backbone(json, SafeTensors(), Device::cpu);
  const std::vector<float> x = random_vector(shape.numel(), 5, -8.f, 8.f);
  auto in = Buffer<float>::from_host(x, Device::cpu);
  const int taps[] = {0, 1, 2, 3, 4, 5};
  const auto out = bb.forward(in.data(), shape, taps);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const float v = x[i];
    const float r = std::max(v, 0.f), r6 = std::clamp(v, 0.f, 6.f);
    const float s = v + r, s_relu = std::max(v + r6, 0.f), s_relu6 = std::clamp(s + v, 0.f, 6.f);
    EXPECT_EQ(out[0].data.data()[i], r) << i;
    EXPECT_EQ(out[1].data.data()[i], r6) << i;
    EXPECT_EQ(out[2].data.data()[i], s) << i;
    EXPECT_EQ(out[3].data.data()[i], s_relu) << i;
    EXPECT_EQ(out[4].data.data()[i], s_relu6) << i;
    EXPECT_EQ(out[5].data.data()[i], s_relu6 + s_relu) << i;
  }
}

// The classifier head: conv, global pool, RESHAPE (with a dangling shape input, as in TFLite
// exports), FULLY_CONNECTED with relu, SOFTMAX.
TEST(backbone_ops, HeadReshapeFullyConnectedSoftmax) {
  const int64_t N = 3, C = 4, H = 5, W = 3, O = 11;
  const std::string json = R"({"input": "x", "output": "p", "ops": [
      {"op": "RESHAPE", "inputs": ["x", "shape_const"], "output": "f"},
      {"op": "FULLY_CONNECTED", "inputs": ["f"], "output": "z", "weight": "fw", "bias": "fb",
       "act": "relu"},
      {"op": "SOFTMAX", "inputs": ["z"], "output": "p"}]})";
  std::map<std::string, HostTensor> t;
  t["fw"] = {{O, C * H * W}, random_vector(O * C * H * W, 1)};
  t["fb"] = {{O}, random_vector(O, 2)};
  SafeTensors w("head", t, {});
  Backbone bb = make_backbone(json, w, Device::cpu);
  const TensorShape shape{N, C, H, W, 4};
  const std::vector<float> x = random_vector(shape.numel(), 9, -2.f, 2.f);
  auto in = Buffer<float>::from_host(x, Device::cpu);
  const int taps[] = {0, 1, 2};
  const auto out = bb.forward(in.data(), shape, taps);
  EXPECT_EQ(out[0].shape, (TensorShape{N, C * H * W, 1, 1, 2}));
  EXPECT_EQ(out[2].shape, (TensorShape{N, O, 1, 1, 2}));
  // Flattening is NCHW order: the flat tensor is the input itself.
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(out[0].data.data()[i], x[i]);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> z(O);
    double zmax = -INFINITY;
    for (int64_t o = 0; o < O; ++o) {
      double acc = t["fb"].data[o];
      for (int64_t k = 0; k < C * H * W; ++k)
        acc += double(x[n * C * H * W + k]) * t["fw"].data[o * C * H * W + k];
      z[o] = std::max(acc, 0.0);
      zmax = std::max(zmax, z[o]);
      EXPECT_NEAR(out[1].data.data()[n * O + o], z[o], 1e-5) << n << " " << o;
    }
    double s = 0;
    for (double v : z) s += std::exp(v - zmax);
    for (int64_t o = 0; o < O; ++o)
      EXPECT_NEAR(out[2].data.data()[n * O + o], std::exp(z[o] - zmax) / s, 1e-6) << n << " " << o;
  }
}

TEST(backbone_ops, ChainTapsMatchComposedReferences) {
  const SafeTensors w = chain_weights();
  Backbone bb = make_backbone(kChainJson, w, Device::cpu);
  const TensorShape shape{2, 3, 11, 14, 4};
  const std::vector<float> x = random_vector(shape.numel(), 21, -2.f, 2.f);

  // Each layer's reference, fed with the previous reference output.
  auto conv = [&](const std::vector<float>& in, TensorShape s, int64_t o, int64_t k, int64_t stride,
                  int64_t groups, const char* wn, const char* bn, const char* act) {
    ConvCase c{"", s.n, s.c, s.h, s.w, o, k, k, stride, stride, 1, 1, groups, "SAME", {}, act};
    std::map<std::string, HostTensor> t = {{"w", w.at(wn)}, {"b", w.at(bn)}};
    return conv_reference(c, in, SafeTensors("", t, {}));
  };
  const RefOut a = conv(x, shape, 6, 3, 2, 1, "w0", "b0", "relu6");
  const RefOut b = conv(a.y, a.shape, 6, 3, 1, 0, "w1", "b1", "relu6");
  const RefOut c = conv(b.y, b.shape, 6, 1, 1, 1, "w2", "b2", "none");

  auto in = Buffer<float>::from_host(x, Device::cpu);
  const int taps[] = {3, 0, 6, 3};
  const auto out = bb.forward(in.data(), shape, taps);
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(expect_close(out[1].data.to_host(), a, 2e-6, 1e-6, "tap 0"), 0);
  RefOut d = c;
  for (std::size_t i = 0; i < d.y.size(); ++i) {
    d.y[i] += a.y[i];
    d.abs_sum[i] += std::abs(a.y[i]) + 1e-3;  // c and a each carry their own rounding
  }
  EXPECT_EQ(expect_close(out[0].data.to_host(), d, 1e-5, 1e-5, "tap 3"), 0);
  EXPECT_EQ(out[0].data.to_host(), out[3].data.to_host()) << "a repeated tap differs";
  // Head: mean over space, then the FC weight.
  const int64_t HW = d.shape.h * d.shape.w;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t o = 0; o < 4; ++o) {
      double acc = 0;
      for (int64_t ch = 0; ch < 6; ++ch) {
        double m = 0;
        for (int64_t k = 0; k < HW; ++k) m += d.y[(n * 6 + ch) * HW + k];
        acc += m / HW * w.at("w3").data[o * 6 + ch];
      }
      EXPECT_NEAR(out[2].data.data()[n * 4 + o], acc, 1e-4) << n << " " << o;
    }
}

// Only ops up to the deepest tap run: the FC head needs a fixed input size, yet early taps
// work for any size, and the plan and arena are reused across calls of one shape.
TEST(backbone_ops, RunsOnlyToDeepestTapAndReusesArena) {
  const SafeTensors w = chain_weights();
  Backbone bb = make_backbone(kChainJson, w, Device::cpu);
  const TensorShape big{1, 3, 31, 29, 4};
  const std::vector<float> x = random_vector(big.numel(), 2);
  auto in = Buffer<float>::from_host(x, Device::cpu);
  const int early[] = {2};
  EXPECT_NO_THROW(bb.forward(in.data(), big, early));
  EXPECT_EQ(bb.n_plans(), 1u);
  const std::size_t arena = bb.arena_bytes();
  EXPECT_GT(arena, 0u);
  const auto first = bb.forward(in.data(), big, early)[0].data.to_host();
  const auto second = bb.forward(in.data(), big, early)[0].data.to_host();
  EXPECT_EQ(first, second);
  EXPECT_EQ(bb.n_plans(), 1u);
  EXPECT_EQ(bb.arena_bytes(), arena);
  // Liveness: the arena is smaller than every tensor of the plan side by side (a, b, c at
  // 16x15 with 6 channels, plus the reordered input).
  EXPECT_LT(arena, std::size_t(3 * 6 * 16 * 15 * 4 + 3 * 31 * 29 * 4));

  const int all[] = {6};
  // The FC weight takes 6 values: with a global pool any size works; the whole graph runs.
  const auto fc = bb.forward(in.data(), big, all);
  EXPECT_EQ(fc[0].shape, (TensorShape{1, 4, 1, 1, 2}));
  EXPECT_EQ(bb.n_plans(), 2u);
}

// A batch run in chunks (the CPU default: one image at a time) equals the batch in one go.
TEST(backbone_ops, BatchChunksGiveTheSameFeatures) {
  const SafeTensors w = chain_weights();
  const TensorShape shape{5, 3, 12, 13, 4};
  const std::vector<float> x = random_vector(shape.numel(), 12);
  const int taps[] = {1, 3, 6};
  std::vector<std::vector<float>> results[3];
  int k = 0;
  for (int chunk : {0, 2, 16}) {
    BackboneOptions opt;
    opt.cpu_batch_chunk = chunk;
    Backbone bb = make_backbone(kChainJson, w, Device::cpu, opt);
    for (auto& t : bb.forward(x.data(), shape, taps)) results[k].push_back(t.data.to_host());
    ++k;
  }
  for (int c = 1; c < 3; ++c)
    for (int t = 0; t < 3; ++t)
      for (std::size_t i = 0; i < results[0][t].size(); ++i)
        ASSERT_NEAR(results[c][t][i], results[0][t][i], 1e-5 * (1 + std::abs(results[0][t][i])))
            << "chunking " << c << " tap " << taps[t] << " element " << i;
}

TEST(backbone_ops, ForwardIntoWritesOnlyItsOutputs) {
  const SafeTensors w = chain_weights();
  Backbone bb = make_backbone(kChainJson, w, Device::cpu);
  const TensorShape shape{2, 3, 9, 10, 4};
  const std::vector<float> x = random_vector(shape.numel(), 8);
  const int taps[] = {1, 4};
  const auto shapes = bb.tap_shapes(shape, taps);
  const int64_t pad = 37;
  std::vector<float> o0(shapes[0].numel() + 2 * pad, -3.5f), o1(shapes[1].numel() + 2 * pad, -3.5f);
  float* outs[] = {o0.data() + pad, o1.data() + pad};
  bb.forward_into(x.data(), shape, taps, outs);
  for (auto* v : {&o0, &o1})
    for (int64_t i = 0; i < pad; ++i) {
      EXPECT_EQ((*v)[i], -3.5f);
      EXPECT_EQ((*v)[v->size() - 1 - i], -3.5f);
    }
  const auto ref = bb.forward(x.data(), shape, taps);
  for (int64_t i = 0; i < shapes[0].numel(); ++i) ASSERT_EQ(outs[0][i], ref[0].data.data()[i]);
}

TEST(backbone_ops, RequestErrorsNameTheProblem) {
  const SafeTensors w = chain_weights();
  Backbone bb = make_backbone(kChainJson, w, Device::cpu);
  std::vector<float> x(2 * 4 * 8 * 8);
  const int tap0[] = {0}, bad_tap[] = {7}, no_taps[1] = {0};
  auto msg = [&](auto fn) {
    try {
      fn();
    } catch (const InputError& e) {
      return std::string(e.what());
    }
    return std::string("no InputError");
  };
  EXPECT_NE(msg([&] {
              bb.forward(x.data(), {2, 4, 8, 8, 4}, tap0);
            }).find("input has 4 channels, the graph takes 3"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              bb.forward(x.data(), {2, 3, 8, 8, 4}, bad_tap);
            }).find("tap 7"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              bb.forward(nullptr, {2, 3, 8, 8, 4}, tap0);
            }).find("null input"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              bb.forward(x.data(), {2, 3, 8, 8, 4}, std::span<const int>(no_taps, 0));
            }).find("no taps"),
            std::string::npos);
  EXPECT_NE(msg([&] {
              bb.forward(x.data(), {0, 3, 8, 8, 4}, tap0);
            }).find("non-empty"),
            std::string::npos);
  // Too small for the head? No: a 1x1 input still works through SAME padding.
  EXPECT_EQ(msg([&] { bb.forward(x.data(), {1, 3, 1, 1, 4}, tap0); }), "no InputError");
  float* one[] = {x.data()};
  float* two[] = {x.data(), x.data()};
  EXPECT_NE(msg([&] {
              bb.forward_into(x.data(), {1, 3, 8, 8, 4}, tap0, two);
            }).find("2 outputs"),
            std::string::npos);
  (void)one;
  EXPECT_NE(msg([&] { bb.tap("stride8"); }).find("no tap named 'stride8'"), std::string::npos);
}

// The plain-loop CPU references of kernels/backbone_ops.h (the CUDA kernels' ground truth)
// against the test's own loops.
TEST(backbone_ops, KernelReferencesMatchTestLoops) {
  for (const ConvCase& k : conv_cases()) {
    const SafeTensors w = conv_weights(k, 3);
    const std::vector<float> x = random_vector(k.n * k.c * k.h * k.w, 4, -2.f, 2.f);
    const RefOut ref = conv_reference(k, x, w);
    const int64_t khe = (k.kh - 1) * k.dh + 1, kwe = (k.kw - 1) * k.dw + 1;
    bbops::ConvGeom g{k.n,
                      k.c,
                      k.h,
                      k.w,
                      k.o,
                      k.kh,
                      k.kw,
                      k.sh,
                      k.sw,
                      k.dh,
                      k.dw,
                      case_pads(k.padding, k.pads, k.h, k.w, khe, kwe, k.sh, k.sw),
                      k.groups == 0 ? k.c : k.groups,
                      ref.shape.h,
                      ref.shape.w,
                      k.act == "relu"    ? bbops::kActRelu
                      : k.act == "relu6" ? bbops::kActRelu6
                                         : 0};
    std::vector<float> y(ref.y.size());
    bbops::conv2d_cpu(g, x.data(), w.at("w").data.data(), k.bias ? w.at("b").data.data() : nullptr,
                      y.data());
    EXPECT_EQ(expect_close(y, ref, 1e-6, 1e-6, k.name), 0);
  }
  for (const PoolCase& k : pool_cases()) {
    const std::vector<float> x = random_vector(k.n * k.c * k.h * k.w, 4, -3.f, 3.f);
    const RefOut ref = pool_reference(k, x);
    std::vector<float> y(ref.y.size());
    if (k.kh == 0) {
      bbops::global_avg_pool_cpu(k.n * k.c, k.h * k.w, x.data(), y.data());
    } else {
      const Pads p = case_pads(k.padding, k.pads, k.h, k.w, k.kh, k.kw, k.sh, k.sw);
      bbops::PoolGeom g{k.n,  k.c,  k.h, k.w,         k.kh,        k.kw,
                        k.sh, k.sw, p,   ref.shape.h, ref.shape.w, k.count_include_pad};
      (k.max ? bbops::max_pool_cpu : bbops::avg_pool_cpu)(g, x.data(), y.data());
    }
    EXPECT_EQ(expect_close(y, ref, 1e-6, 1e-7, k.name), 0);
  }
  // pad: the interior is the input, the border the fill value.
  const std::vector<float> x = random_vector(2 * 3 * 4 * 5, 1);
  const Pads p{1, 2, 0, 3};
  std::vector<float> y(2 * 3 * 7 * 8);
  bbops::pad_cpu(2, 3, 4, 5, p, -9.f, x.data(), y.data());
  for (int64_t pl = 0; pl < 6; ++pl)
    for (int64_t r = 0; r < 7; ++r)
      for (int64_t c = 0; c < 8; ++c) {
        const bool in = r >= 1 && r < 5 && c < 5;
        EXPECT_EQ(y[(pl * 7 + r) * 8 + c], in ? x[(pl * 4 + r - 1) * 5 + c] : -9.f);
      }
  // softmax over the middle axis sums to 1 and keeps order.
  const std::vector<float> s = random_vector(2 * 5 * 3, 2, -4.f, 4.f);
  std::vector<float> sm(s.size());
  bbops::softmax_cpu(2, 5, 3, s.data(), sm.data());
  for (int64_t o = 0; o < 2; ++o)
    for (int64_t i = 0; i < 3; ++i) {
      double sum = 0;
      for (int64_t k = 0; k < 5; ++k) sum += sm[(o * 5 + k) * 3 + i];
      EXPECT_NEAR(sum, 1.0, 1e-6);
    }
  // NaN survives activations and max pooling instead of turning into a bound.
  EXPECT_TRUE(std::isnan(bbops::activate(NAN, bbops::kActRelu6)));
  EXPECT_TRUE(std::isnan(bbops::activate(NAN, bbops::kActRelu)));
  const float nan_plane[4] = {1.f, NAN, 3.f, 2.f};
  bbops::PoolGeom g{1, 1, 2, 2, 2, 2, 1, 1, {}, 1, 1, false};
  EXPECT_TRUE(std::isnan(bbops::max_pool_at(g, nan_plane, 0, 0)));
}

}  // namespace
}  // namespace mirad
