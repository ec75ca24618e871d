// Flow benchmarks: forward+backward and HVP at realistic sizes (D = 96..1024, 8 blocks,
// 4096 vectors, 64 condition channels), CPU float32 (OpenBLAS) and CUDA float32.
#include <benchmark/benchmark.h>

#include <random>

#include "engine/flow/flow.h"
#include "kernels/flow_ops_cpu.h"
#ifdef MIRAD_HAVE_CUDA
#include "kernels/flow_ops_cuda.h"
#endif

using namespace mirad;

namespace {

struct Setup {
  CouplingFlow<float> flow;
  Buffer<float> params, v, grad, hv, x, c;
  int64_t N;
  Setup(int64_t D, int64_t N_, Device dev)
      : flow(make_config(D), dev), N(N_) {
    // Production settings: the trainer runs without the per-call host checks (the parameter
    // fingerprint alone copies every parameter to the host on CUDA).
    FlowChecks checks = FlowChecks::none();
    checks.host_sync = true;
    flow.set_checks(checks);
    params = flow.init_params();
    grad = Buffer<float>(flow.n_params(), dev);
    hv = Buffer<float>(flow.n_params(), dev);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    std::vector<float> h(std::max<int64_t>(N * std::max<int64_t>(D, 64), flow.n_params()));
    for (auto& e : h) e = nd(rng);
    x = Buffer<float>::from_host(std::vector<float>(h.begin(), h.begin() + N * D), dev);
    v = Buffer<float>::from_host(std::vector<float>(h.begin(), h.begin() + flow.n_params()), dev);
    c = Buffer<float>::from_host(std::vector<float>(h.begin(), h.begin() + N * 64), dev);
  }
  static FlowConfig make_config(int64_t D) {
    FlowConfig cfg;
    cfg.dim = D, cfg.cond_dim = 64, cfg.n_blocks = 8;
    return cfg;
  }
  MatrixView<const float> xv() const { return {x.data(), N, flow.config().dim, x.device()}; }
  MatrixView<const float> cv() const { return {c.data(), N, 64, c.device()}; }
};

bool skip_without_device(benchmark::State& state, Device dev) {
  if (dev == Device::cuda && !cuda_available()) {
    state.SkipWithError("no CUDA device");
    return true;
  }
  return false;
}

// GEMM flops of one forward (2 GEMMs per block, W1 over [x1, c]); backward is about twice that.
double forward_flops(int64_t D, int64_t N) {
  const double H = 2.0 * D, d1 = D / 2, d2 = D - D / 2;
  return 8 * 2.0 * N * (H * (d1 + 64) + 2 * d2 * H);
}

// Times forward+backward on a set-up flow (the caller picked device and precision).
void forward_backward(benchmark::State& state, Setup& s, int64_t D, int64_t N) {
  for (auto _ : state) {
    // forward() and backward() synchronise the stream, so the time is real device time.
    benchmark::DoNotOptimize(s.flow.forward(s.params, s.xv(), s.cv()));
    s.flow.backward(s.params, s.xv(), s.cv(), s.grad);
  }
  state.SetItemsProcessed(state.iterations() * N);
  state.counters["GFLOP/s"] = benchmark::Counter(3 * forward_flops(D, N) * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

void BM_FlowForwardBackward(benchmark::State& state, Device dev) {
  if (skip_without_device(state, dev)) return;
  const int64_t D = state.range(0), N = state.range(1);
  Setup s(D, N, dev);
  forward_backward(state, s, D, N);
}

// Forward+backward with the GEMMs in FP32, TF32 or BF16 (arg 2: 0, 1, 2): issue 8's tensor-core
// target is 150 TFLOP/s of GEMM work at D = 1024. CUDA only (the CPU stays FP32).
void BM_FlowPrecision(benchmark::State& state) {
  if (skip_without_device(state, Device::cuda)) return;
  const int64_t D = state.range(0), N = state.range(1);
  static const char* kNames[] = {"fp32", "tf32", "bf16"};
  Setup s(D, N, Device::cuda);
  s.flow.set_precision(kNames[state.range(2)]);
  state.SetLabel(kNames[state.range(2)]);
  forward_backward(state, s, D, N);
}

// The HVP with its gradient (BM_FlowHvp), or H*v alone (BM_FlowHvpOnly, an empty gradient):
// what MAML's backward sweep needs, since the inner step formed the gradient at theta_k
// already. Side by side, the saving of the skipped parameter-gradient GEMMs.
void flow_hvp(benchmark::State& state, Device dev, bool with_grad) {
  if (skip_without_device(state, dev)) return;
  const int64_t D = state.range(0), N = state.range(1);
  Setup s(D, N, dev);
  const uint64_t f0 = cpu_gemm_flops().load();
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.flow.forward(s.params, s.xv(), s.cv()));
    s.flow.hvp(s.params, s.xv(), s.cv(), s.v, with_grad ? VecView<float>(s.grad) : VecView<float>(),
               s.hv);
  }
  state.SetItemsProcessed(state.iterations() * N);
  // GEMM work as counted by the CPU ops (forward + tangent + reverse with curvature terms).
  if (dev == Device::cpu)
    state.counters["GFLOP/s"] = benchmark::Counter(double(cpu_gemm_flops().load() - f0) / 1e9,
                                                   benchmark::Counter::kIsRate);
}
void BM_FlowHvp(benchmark::State& state, Device dev) { flow_hvp(state, dev, true); }
void BM_FlowHvpOnly(benchmark::State& state, Device dev) { flow_hvp(state, dev, false); }

void BM_FlowForward(benchmark::State& state, Device dev) {
  if (skip_without_device(state, dev)) return;
  const int64_t D = state.range(0), N = state.range(1);
  Setup s(D, N, dev);
  for (auto _ : state) benchmark::DoNotOptimize(s.flow.forward(s.params, s.xv(), s.cv()));
  state.SetItemsProcessed(state.iterations() * N);
  state.counters["GFLOP/s"] = benchmark::Counter(forward_flops(D, N) * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

#ifdef MIRAD_HAVE_CUDA
// The ceiling for the flow on this device: one cuBLAS SGEMM of the subnet's first layer
// (N x (d1 + C) times its weight), without any of the flow's element-wise work.
void BM_CublasSubnetGemm(benchmark::State& state) {
  if (!cuda_available()) return state.SkipWithError("no CUDA device");
  const int64_t D = state.range(0), N = state.range(1), H = 2 * D, K = D / 2 + 64;
  Buffer<float> a(N * K, Device::cuda), w(H * K, Device::cuda), c(N * H, Device::cuda);
  a.zero(), w.zero(), c.zero();
  CudaFlowOps ops;
  for (auto _ : state) {
    ops.gemm(false, true, N, H, K, 1.f, a.data(), K, w.data(), K, 0.f, c.data(), H);
    ops.synchronize();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * N * H * K * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}
BENCHMARK(BM_CublasSubnetGemm)->Name("BM_CublasSubnetGemm/cuda")
    ->Args({256, 4096})->Args({1024, 4096})->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif

}  // namespace

BENCHMARK_CAPTURE(BM_FlowForward, cpu, Device::cpu)
    ->Args({256, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowForward, cuda, Device::cuda)
    ->Args({256, 4096})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowForwardBackward, cpu, Device::cpu)
    ->Args({40, 4096})->Args({112, 4096})->Args({96, 4096})->Args({256, 4096})->Args({1024, 4096})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowHvp, cpu, Device::cpu)
    ->Args({40, 4096})->Args({112, 4096})->Args({96, 4096})->Args({256, 4096})->Args({1024, 4096})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowHvpOnly, cpu, Device::cpu)
    ->Args({40, 4096})->Args({112, 4096})->Args({256, 4096})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowHvpOnly, cuda, Device::cuda)
    ->Args({256, 4096})->Args({1024, 4096})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_FlowPrecision)->Name("BM_FlowPrecision/cuda")
    ->Args({1024, 4096, 0})->Args({1024, 4096, 1})->Args({1024, 4096, 2})
    ->Args({1024, 16384, 0})->Args({1024, 16384, 1})->Args({1024, 16384, 2})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowForwardBackward, cuda, Device::cuda)
    ->Args({96, 4096})->Args({256, 4096})->Args({512, 4096})->Args({1024, 4096})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_FlowHvp, cuda, Device::cuda)
    ->Args({96, 4096})->Args({256, 4096})->Args({512, 4096})->Args({1024, 4096})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
