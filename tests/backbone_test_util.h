// Shared by the backbone tests: one-op graph cases (JSON + random weights) described once and
// run on any backend, and the naive nested-loop references they are checked against.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "engine/backbone/backbone.h"
#include "engine/backbone/backbone_graph.h"
#include "engine/io/safetensors.h"

namespace mirad::bbtest {

// A convolution case; groups = 0 means a DEPTHWISE_CONV_2D op (groups = channels).
struct ConvCase {
  std::string name;
  int64_t n, c, h, w, o, kh, kw;
  int64_t sh = 1, sw = 1, dh = 1, dw = 1;
  int64_t groups = 1;
  std::string padding = "SAME";  // "SAME", "VALID", or "pads"
  Pads pads{};
  std::string act = "none";
  bool bias = true;
};

// A pooling case; kh = 0 means global average pooling.
struct PoolCase {
  std::string name;
  bool max;
  int64_t n, c, h, w, kh, kw, sh, sw;
  std::string padding = "VALID";
  Pads pads{};
  bool count_include_pad = false;
};

inline void PrintTo(const ConvCase& k, std::ostream* os) {
  *os << k.name;
}
inline void PrintTo(const PoolCase& k, std::ostream* os) {
  *os << k.name;
}

inline std::vector<float> random_vector(std::size_t n, uint32_t seed, float lo = -1.f,
                                        float hi = 1.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// Convolution cases shared by the CPU and CUDA tests: odd sizes, every padding mode.
inline const std::vector<ConvCase>& conv_cases() {
  static const std::vector<ConvCase> cases = {
      // name, n, c, h, w, o, kh, kw, sh, sw, dh, dw, groups, padding, pads, act, bias
      {"same_s1_odd", 2, 5, 13, 11, 7, 3, 3, 1, 1, 1, 1, 1, "SAME", {}, "relu6"},
      {"same_s2_even_asym", 1, 4, 14, 12, 8, 3, 3, 2, 2, 1, 1, 1, "SAME", {}, "none"},
      {"same_s2_odd_sym", 3, 3, 13, 15, 6, 3, 3, 2, 2, 1, 1, 1, "SAME", {}, "relu"},
      {"same_5x5_s2_even", 1, 3, 16, 10, 5, 5, 5, 2, 2, 1, 1, 1, "SAME", {}, "none"},
      {"same_s2_4x4_kernel_even", 1, 3, 12, 9, 4, 4, 4, 2, 2, 1, 1, 1, "SAME", {}, "none"},
      {"pointwise_valid", 2, 16, 9, 7, 24, 1, 1, 1, 1, 1, 1, 1, "VALID", {}, "relu"},
      {"pointwise_s2", 1, 12, 9, 8, 10, 1, 1, 2, 2, 1, 1, 1, "VALID", {}, "none"},
      {"pointwise_wide", 2, 33, 7, 5, 65, 1, 1, 1, 1, 1, 1, 1, "SAME", {}, "relu6"},
      {"valid_3x3_odd", 2, 6, 11, 9, 5, 3, 3, 1, 1, 1, 1, 1, "VALID", {}, "none"},
      {"valid_kernel_is_input", 1, 4, 5, 3, 6, 5, 3, 1, 1, 1, 1, 1, "VALID", {}, "none"},
      {"pads_asym_rect_kernel", 1, 3, 10, 9, 4, 3, 4, 2, 1, 1, 1, 1, "pads", {0, 2, 1, 0}, "none"},
      {"pads_asym_3x3", 2, 5, 7, 8, 6, 3, 3, 1, 1, 1, 1, 1, "pads", {2, 0, 1, 3}, "relu6"},
      {"pads_beyond_kernel", 1, 2, 4, 5, 3, 3, 3, 1, 2, 1, 1, 1, "pads", {3, 1, 0, 4}, "none"},
      {"dilation2_same", 1, 4, 17, 13, 5, 3, 3, 1, 1, 2, 2, 1, "SAME", {}, "none"},
      {"dilation23_valid", 2, 3, 15, 16, 4, 3, 3, 1, 1, 2, 3, 1, "VALID", {}, "relu"},
      {"dilation2_s2_same", 1, 4, 16, 15, 6, 3, 3, 2, 2, 2, 2, 1, "SAME", {}, "none"},
      {"grouped3_same", 2, 6, 9, 11, 9, 3, 3, 1, 1, 1, 1, 3, "SAME", {}, "relu6"},
      {"grouped2_s2_even", 1, 8, 12, 10, 4, 3, 3, 2, 2, 1, 1, 2, "SAME", {}, "none"},
      {"grouped4_pointwise", 2, 16, 5, 7, 12, 1, 1, 1, 1, 1, 1, 4, "VALID", {}, "none"},
      {"depthwise_s1_same", 2, 7, 13, 9, 7, 3, 3, 1, 1, 1, 1, 0, "SAME", {}, "relu6"},
      {"depthwise_s2_even_asym", 1, 9, 14, 14, 9, 3, 3, 2, 2, 1, 1, 0, "SAME", {}, "relu6"},
      {"depthwise_s2_odd", 2, 5, 15, 11, 5, 5, 5, 2, 2, 1, 1, 0, "SAME", {}, "none"},
      {"depthwise_multiplier2", 1, 6, 10, 9, 12, 3, 3, 1, 1, 1, 1, 0, "SAME", {}, "none"},
      {"depthwise_dilation2", 1, 8, 12, 11, 8, 3, 3, 1, 1, 2, 2, 0, "SAME", {}, "relu"},
      {"depthwise_pads", 1, 32, 9, 10, 32, 3, 3, 2, 1, 1, 1, 0, "pads", {1, 0, 0, 2}, "none"},
      {"depthwise_wide_no_bias", 2, 40, 8, 7, 40, 3, 3, 1, 1, 1, 1, 0, "SAME", {}, "relu6", false},
      {"no_bias_dense", 1, 5, 6, 7, 3, 3, 3, 1, 1, 1, 1, 1, "SAME", {}, "none", false},
  };
  return cases;
}

inline const std::vector<PoolCase>& pool_cases() {
  static const std::vector<PoolCase> cases = {
      // name, max, n, c, h, w, kh, kw, sh, sw, padding, pads, count_include_pad
      {"max_3x3_s2_same_odd", true, 2, 3, 13, 11, 3, 3, 2, 2, "SAME"},
      {"max_3x3_s2_same_even", true, 1, 4, 14, 12, 3, 3, 2, 2, "SAME"},
      {"max_2x2_s2_valid_odd", true, 2, 5, 9, 7, 2, 2, 2, 2, "VALID"},
      {"max_3x2_pads", true, 1, 3, 8, 9, 3, 2, 1, 2, "pads", {1, 2, 0, 1}},
      {"max_3x3_s1_same", true, 1, 17, 6, 5, 3, 3, 1, 1, "SAME"},
      {"avg_3x3_s1_same_exclude", false, 2, 3, 9, 10, 3, 3, 1, 1, "SAME"},
      {"avg_3x3_s2_same_even_exclude", false, 1, 5, 12, 14, 3, 3, 2, 2, "SAME"},
      {"avg_3x3_pads_include", false, 1, 4, 7, 8, 3, 3, 1, 1, "pads", {1, 1, 1, 1}, true},
      {"avg_3x3_pads_asym_exclude", false, 2, 3, 7, 9, 3, 3, 2, 1, "pads", {2, 0, 1, 2}},
      {"avg_2x3_valid", false, 1, 6, 9, 11, 2, 3, 1, 2, "VALID"},
      {"avg_global_odd", false, 3, 7, 5, 9, 0, 0, 0, 0},
      {"avg_global_7x7", false, 2, 33, 7, 7, 0, 0, 0, 0},
  };
  return cases;
}

// A small network with a residual: conv -> depthwise -> conv -> add(skip) -> pool, taps at
// several depths, checked against the references composed by hand.
inline const char* kChainJson = R"({"input": "x", "output": "fc", "ops": [
    {"op": "CONV_2D", "inputs": ["x"], "output": "a", "weight": "w0", "bias": "b0",
     "stride": 2, "padding": "SAME", "act": "relu6"},
    {"op": "DEPTHWISE_CONV_2D", "inputs": ["a"], "output": "b", "weight": "w1", "bias": "b1",
     "stride": 1, "padding": "SAME", "act": "relu6"},
    {"op": "CONV_2D", "inputs": ["b"], "output": "c", "weight": "w2", "bias": "b2",
     "stride": 1, "padding": "SAME", "act": "none"},
    {"op": "ADD", "inputs": ["c", "a"], "output": "d"},
    {"op": "AVERAGE_POOL_2D", "inputs": ["d"], "output": "e"},
    {"op": "RESHAPE", "inputs": ["e"], "output": "f"},
    {"op": "FULLY_CONNECTED", "inputs": ["f"], "output": "fc", "weight": "w3"}]})";

// Activations and adds only (no weights): every add with and without a fused activation.
inline const char* kActsJson = R"({"input": "x", "output": "r6", "ops": [
    {"op": "RELU", "inputs": ["x"], "output": "r"},
    {"op": "RELU6", "inputs": ["x"], "output": "r6a"},
    {"op": "ADD", "inputs": ["x", "r"], "output": "s"},
    {"op": "ADD", "inputs": ["x", "r6a"], "output": "s_relu", "act": "relu"},
    {"op": "ADD", "inputs": ["s", "x"], "output": "s_relu6", "act": "relu6"},
    {"op": "ADD", "inputs": ["s_relu6", "s_relu"], "output": "r6"}]})";

inline SafeTensors chain_weights() {
  std::map<std::string, HostTensor> t;
  t["w0"] = {{6, 3, 3, 3}, random_vector(6 * 27, 1)};
  t["b0"] = {{6}, random_vector(6, 2)};
  t["w1"] = {{6, 1, 3, 3}, random_vector(54, 3)};
  t["b1"] = {{6}, random_vector(6, 4)};
  t["w2"] = {{6, 6, 1, 1}, random_vector(36, 5)};
  t["b2"] = {{6}, random_vector(6, 6)};
  t["w3"] = {{4, 6}, random_vector(24, 7)};
  return SafeTensors("chain", t, {});
}

inline std::string padding_json(const std::string& padding, const Pads& p) {
  if (padding == "pads")
    return fmt::format("\"pads\": [{}, {}, {}, {}]", p.top, p.bottom, p.left, p.right);
  return fmt::format("\"padding\": \"{}\"", padding);
}

inline int64_t weight_in_channels(const ConvCase& k) {
  return k.groups == 0 ? 1 : k.c / k.groups;
}

// The graph JSON of one conv op reading "x" and writing "y", weights "w" and "b".
inline std::string conv_graph_json(const ConvCase& k) {
  return fmt::format(
      R"({{"input": "x", "output": "y", "ops": [{{"op": "{}", "inputs": ["x"], "output": "y",
          "weight": "w", {} "stride": [{}, {}], "dilation": [{}, {}], {}, "act": "{}" {} }}]}})",
      k.groups == 0 ? "DEPTHWISE_CONV_2D" : "CONV_2D", k.bias ? R"("bias": "b",)" : "", k.sh, k.sw,
      k.dh, k.dw, padding_json(k.padding, k.pads), k.act,
      k.groups != 1 ? fmt::format(", \"groups\": {}", k.groups == 0 ? k.c : k.groups) : "");
}

inline SafeTensors conv_weights(const ConvCase& k, uint32_t seed) {
  std::map<std::string, HostTensor> t;
  const int64_t cin = weight_in_channels(k);
  t["w"] = {{k.o, cin, k.kh, k.kw}, random_vector(k.o * cin * k.kh * k.kw, seed)};
  if (k.bias) t["b"] = {{k.o}, random_vector(k.o, seed + 1)};
  return SafeTensors("test weights", std::move(t), {});
}

inline std::string pool_graph_json(const PoolCase& k) {
  std::string fields;
  if (k.kh > 0)
    fields = fmt::format(R"(, "kernel": [{}, {}], "stride": [{}, {}], {})", k.kh, k.kw, k.sh, k.sw,
                         padding_json(k.padding, k.pads));
  if (!k.max && k.kh > 0 && k.count_include_pad) fields += R"(, "count_include_pad": true)";
  return fmt::format(
      R"({{"input": "x", "output": "y", "ops": [{{"op": "{}", "inputs": ["x"], "output": "y" {} }}]}})",
      k.max ? "MAX_POOL_2D" : "AVERAGE_POOL_2D", fields);
}

inline Backbone make_backbone(const std::string& json, const SafeTensors& weights, Device d,
                              BackboneOptions opt = {}) {
  return Backbone(parse_graph(json, "test graph"), weights, d, {}, opt);
}

// Runs op `tap` of `bb` on host input x (copied to the backbone's device) and returns the
// tap's output on the host.
inline std::vector<float> run_tap(Backbone& bb, const std::vector<float>& x,
                                  const TensorShape& shape, int tap) {
  auto in = Buffer<float>::from_host(x, bb.device());
  const int taps[] = {tap};
  auto out = bb.forward(in.data(), shape, taps);
  return out.at(0).data.to_host();
}

// ---- naive references (double accumulation); each also returns, per output, the sum of the
// absolute values of the terms, which bounds float32 rounding of any summation order ----

inline Pads same_pads_1d(int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw) {
  auto one = [](int64_t in, int64_t k, int64_t s) {
    const int64_t out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>((out - 1) * s + k - in, 0);
    return std::pair<int64_t, int64_t>{total / 2, total - total / 2};
  };
  auto [t, b] = one(h, kh, sh);
  auto [l, r] = one(w, kw, sw);
  return {t, b, l, r};
}

inline Pads case_pads(const std::string& padding, const Pads& explicit_pads, int64_t h, int64_t w,
                      int64_t kh_eff, int64_t kw_eff, int64_t sh, int64_t sw) {
  if (padding == "SAME") return same_pads_1d(h, w, kh_eff, kw_eff, sh, sw);
  if (padding == "pads") return explicit_pads;
  return {};
}

inline float ref_act(double v, const std::string& act) {
  if (act == "relu") return static_cast<float>(std::max(v, 0.0));
  if (act == "relu6") return static_cast<float>(std::min(std::max(v, 0.0), 6.0));
  return static_cast<float>(v);
}

struct RefOut {
  TensorShape shape;
  std::vector<float> y;
  std::vector<double> abs_sum;
};

inline RefOut conv_reference(const ConvCase& k, const std::vector<float>& x,
                             const SafeTensors& wts) {
  const int64_t khe = (k.kh - 1) * k.dh + 1, kwe = (k.kw - 1) * k.dw + 1;
  const Pads p = case_pads(k.padding, k.pads, k.h, k.w, khe, kwe, k.sh, k.sw);
  const int64_t oh = (k.h + p.top + p.bottom - khe) / k.sh + 1;
  const int64_t ow = (k.w + p.left + p.right - kwe) / k.sw + 1;
  const int64_t groups = k.groups == 0 ? k.c : k.groups;
  const int64_t cg = k.c / groups, og = k.o / groups;
  const std::vector<float>& w = wts.at("w").data;
  RefOut r{{k.n, k.o, oh, ow, 4}, {}, {}};
  r.y.resize(k.n * k.o * oh * ow);
  r.abs_sum.resize(r.y.size());
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t o = 0; o < k.o; ++o)
      for (int64_t y = 0; y < oh; ++y)
        for (int64_t xx = 0; xx < ow; ++xx) {
          double acc = k.bias ? wts.at("b").data[o] : 0.0, mag = std::abs(acc);
          const int64_t g = o / og;
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t ky = 0; ky < k.kh; ++ky)
              for (int64_t kx = 0; kx < k.kw; ++kx) {
                const int64_t iy = y * k.sh - p.top + ky * k.dh;
                const int64_t ix = xx * k.sw - p.left + kx * k.dw;
                if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                const double t = double(x[((n * k.c + g * cg + ci) * k.h + iy) * k.w + ix]) *
                                 w[((o * cg + ci) * k.kh + ky) * k.kw + kx];
                acc += t;
                mag += std::abs(t);
              }
          const std::size_t i = ((n * k.o + o) * oh + y) * ow + xx;
          r.y[i] = ref_act(acc, k.act);
          r.abs_sum[i] = mag;
        }
  return r;
}

inline RefOut pool_reference(const PoolCase& k, const std::vector<float>& x) {
  RefOut r;
  if (k.kh == 0) {
    r.shape = {k.n, k.c, 1, 1, 4};
    for (int64_t i = 0; i < k.n * k.c; ++i) {
      double s = 0, m = 0;
      for (int64_t j = 0; j < k.h * k.w; ++j) {
        s += x[i * k.h * k.w + j];
        m += std::abs(x[i * k.h * k.w + j]);
      }
      r.y.push_back(static_cast<float>(s / double(k.h * k.w)));
      r.abs_sum.push_back(m / double(k.h * k.w));
    }
    return r;
  }
  const Pads p = case_pads(k.padding, k.pads, k.h, k.w, k.kh, k.kw, k.sh, k.sw);
  const int64_t oh = (k.h + p.top + p.bottom - k.kh) / k.sh + 1;
  const int64_t ow = (k.w + p.left + p.right - k.kw) / k.sw + 1;
  r.shape = {k.n, k.c, oh, ow, 4};
  for (int64_t plane = 0; plane < k.n * k.c; ++plane)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t xx = 0; xx < ow; ++xx) {
        double best = -INFINITY, s = 0, m = 0;
        int64_t cnt = 0;
        for (int64_t ky = 0; ky < k.kh; ++ky)
          for (int64_t kx = 0; kx < k.kw; ++kx) {
            const int64_t iy = y * k.sh - p.top + ky, ix = xx * k.sw - p.left + kx;
            if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
            const double v = x[(plane * k.h + iy) * k.w + ix];
            best = std::max(best, v);
            s += v;
            m += std::abs(v);
            ++cnt;
          }
        const double div = k.count_include_pad ? double(k.kh * k.kw) : double(cnt);
        r.y.push_back(static_cast<float>(k.max ? best : s / div));
        r.abs_sum.push_back(k.max ? std::abs(best) : m / div);
      }
  return r;
}

// Every element within float32 rounding of any summation order: |got - ref| <= rel * (sum of
// |terms|) + abs_tol. Reports the first few offenders; returns the number of failures.
inline int64_t expect_close(const std::vector<float>& got, const RefOut& ref, double rel,
                            double abs_tol, const std::string& what) {
  EXPECT_EQ(got.size(), ref.y.size()) << what;
  if (got.size() != ref.y.size()) return 1;
  int64_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double tol = rel * ref.abs_sum[i] + abs_tol;
    if (!(std::abs(double(got[i]) - ref.y[i]) <= tol)) {
      if (bad++ < 5)
        ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << ref.y[i]
                      << " (tolerance " << tol << ")";
    }
  }
  return bad;
}

}  // namespace mirad::bbtest
