// Backbone benchmarks: MobileNetV2 forward (all 66 ops, 224x224) on the CPU at batch 1 and 16
// and on CUDA; and single convolutions of MobileNetV2's shapes through the CPU's two conv
// paths (oneDNN vs OpenBLAS im2col+GEMM), which decided CpuConvAlgo::automatic.
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>

#include "engine/backbone/backbone.h"
#include "engine/io/safetensors.h"

using namespace mirad;
namespace fs = std::filesystem;

namespace {

fs::path mobilenet_dir() {
  const char* env = std::getenv("MIRAD_SHARED");
  const fs::path shared =
      env ? fs::path(env)
          : fs::path(MIRAD_SOURCE_DIR).parent_path() / "shared";
  return shared / "weights" / "mobilenet_v2_imagenet";
}

std::vector<float> random_input(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

bool skip(benchmark::State& state, Device dev) {
  if (dev == Device::cuda && !cuda_available()) {
    state.SkipWithError("no CUDA device");
    return true;
  }
  return false;
}

void BM_MobileNetV2(benchmark::State& state, Device dev) {
  if (skip(state, dev)) return;
  const fs::path dir = mobilenet_dir();
  if (!fs::exists(dir / "graph.json")) {
    state.SkipWithError("no MobileNetV2 weights (set MIRAD_SHARED)");
    return;
  }
  const int64_t N = state.range(0);
  BackboneOptions opt;
  opt.cpu_batch_chunk = static_cast<int>(state.range(1));
  // CUDA: the convolution arithmetic, 0..3 = fp32, tf32, fp16, bf16.
  constexpr BackbonePrecision kPrecisions[] = {BackbonePrecision::fp32, BackbonePrecision::tf32,
                                               BackbonePrecision::fp16, BackbonePrecision::bf16};
  opt.precision = kPrecisions[state.range(2)];
  state.SetLabel(backbone_precision_name(opt.precision));
  Backbone bb(dir, dev, {}, opt);
  const TensorShape shape{N, 3, 224, 224, 4};
  auto x = Buffer<float>::from_host(random_input(shape.numel(), 1), dev);
  const int taps[] = {bb.graph().output_op};
  const auto out_shape = bb.tap_shapes(shape, taps)[0];
  Buffer<float> out(out_shape.numel(), dev);
  float* outs[] = {out.data()};
  bb.forward_into(x.data(), shape, taps, outs);  // builds the plan (and, on CUDA, finds algos)
  mem::synchronize(bb.stream());
  for (auto _ : state) {
    bb.forward_into(x.data(), shape, taps, outs);
    mem::synchronize(bb.stream());
  }
  state.counters["img/s"] =
      benchmark::Counter(double(N) * state.iterations(), benchmark::Counter::kIsRate);
}

// One conv of MobileNetV2's shapes; the op's input reorder and the tap copy are the same for
// both paths, so the difference is the convolution.
struct ConvShape {
  const char* name;
  int64_t c, hw, o, k, stride, groups;  // groups 0 = depthwise
};
const ConvShape kShapes[] = {
    {"stem_3x3_s2_3to32_224", 3, 224, 32, 3, 2, 1},
    {"pointwise_144to24_56", 144, 56, 24, 1, 1, 1},
    {"pointwise_96to576_14", 96, 14, 576, 1, 1, 1},
    {"depthwise_3x3_144_56", 144, 56, 144, 3, 1, 0},
    {"depthwise_3x3_s2_96_112", 96, 112, 96, 3, 2, 0},
    {"dense_3x3_32to64_56", 32, 56, 64, 3, 1, 1},
};

void BM_ConvAlgo(benchmark::State& state, CpuConvAlgo algo) {
  const ConvShape& s = kShapes[state.range(0)];
  const int64_t N = state.range(1);
  const bool dw = s.groups == 0;
  const std::string json = fmt::format(
      R"({{"input": "x", "output": "y", "ops": [{{"op": "{}", "inputs": ["x"], "output": "y",
          "weight": "w", "bias": "b", "stride": {}, "padding": "SAME", "act": "relu6",
          "groups": {}}}]}})",
      dw ? "DEPTHWISE_CONV_2D" : "CONV_2D", s.stride, dw ? s.c : s.groups);
  const int64_t cin = dw ? 1 : s.c;
  std::map<std::string, HostTensor> t;
  t["w"] = {{s.o, cin, s.k, s.k}, random_input(s.o * cin * s.k * s.k, 2)};
  t["b"] = {{s.o}, random_input(s.o, 3)};
  BackboneOptions opt;
  opt.cpu_conv = algo;
  Backbone bb(parse_graph(json, s.name), SafeTensors("bench", t, {}), Device::cpu, {}, opt);
  const TensorShape shape{N, s.c, s.hw, s.hw, 4};
  const std::vector<float> x = random_input(shape.numel(), 4);
  const int taps[] = {0};
  std::vector<float> y(bb.tap_shapes(shape, taps)[0].numel());
  float* outs[] = {y.data()};
  bb.forward_into(x.data(), shape, taps, outs);
  for (auto _ : state) bb.forward_into(x.data(), shape, taps, outs);
  state.SetLabel(s.name);
}

void conv_args(benchmark::internal::Benchmark* b) {
  for (int i = 0; i < int(std::size(kShapes)); ++i)
    for (int n : {1, 16}) b->Args({i, n});
}

}  // namespace

// Args: batch, CPU chunk (0 = automatic), precision (CUDA: 0..3 = fp32, tf32, fp16, bf16).
BENCHMARK_CAPTURE(BM_MobileNetV2, cpu, Device::cpu)
    ->Args({1, 0, 0})
    ->Args({16, 0, 0})
    ->Args({16, 2, 0})
    ->Args({16, 4, 0})
    ->Args({16, 16, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_MobileNetV2, cuda, Device::cuda)
    ->ArgsProduct({{1, 16, 64, 256}, {0}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_ConvAlgo, onednn, CpuConvAlgo::onednn)
    ->Apply(conv_args)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_ConvAlgo, gemm, CpuConvAlgo::gemm)
    ->Apply(conv_args)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
