// CUDA optimizers against the CPU reference: 50 steps on an odd-size buffer with sentinel
// regions, the device-side non-finite check, reset and state export, a non-default stream.
// Suite names start with 'optim' (lower case, as ctest -R matches case-sensitively) so that
// `ctest -R optim` selects them.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/error.h"
#include "cuda_diff.h"
#include "engine/flow/optimizer.h"
#ifdef MIRAD_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace mirad {
namespace {

using nlohmann::json;

constexpr int64_t kN = 100003;  // odd, not a multiple of any block size
constexpr int64_t kPad = 1029;  // sentinel entries after the buffer
constexpr float kParamSentinel = 1234.5f;

#define SKIP_WITHOUT_CUDA() \
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device available"

std::vector<float> random_vector(int64_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

// Padded host image of a device buffer: n real values then kPad copies of `sentinel`.
std::vector<float> padded(const std::vector<float>& v, float sentinel) {
  std::vector<float> out(v);
  out.resize(v.size() + kPad, sentinel);
  return out;
}

// Relative-plus-absolute closeness (llm.c's validate_result rule): the backends differ only in
// rounding and FMA contraction, which compounds over the steps.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, int64_t n,
                  double tol, const std::string& what) {
  ASSERT_GE(int64_t(got.size()), n) << what;
  ASSERT_GE(int64_t(want.size()), n) << what;
  test::expect_each_close(std::vector<float>(got.begin(), got.begin() + n),
                          std::vector<float>(want.begin(), want.begin() + n),
                          [&](size_t i) { return tol + tol * std::abs(double(want[i])); }, what);
}

class cuda_optim_vs_cpu : public ::testing::TestWithParam<json> {};

TEST_P(cuda_optim_vs_cpu, FiftyStepsOddSizeWithSentinels) {
  SKIP_WITHOUT_CUDA();
  const json cfg = GetParam();
  std::mt19937 rng(42);
  std::vector<float> p_cpu = random_vector(kN, rng, 1.f);
  auto cpu = make_optimizer<float>(cfg, kN, Device::cpu);
  auto gpu = make_optimizer<float>(cfg, kN, Device::cuda);
  auto p_dev = Buffer<float>::from_host(padded(p_cpu, kParamSentinel), Device::cuda);
  // NaN sentinels after the gradient: a read past n would trip the non-finite check.
  Buffer<float> g_dev(kN + kPad, Device::cuda);
  for (int step = 0; step < 50; ++step) {
    const std::vector<float> g = random_vector(kN, rng, step % 2 ? 1e-2f : 1.f);
    g_dev.copy_from(padded(g, std::numeric_limits<float>::quiet_NaN()).data(), Device::cpu,
                    kN + kPad);
    cpu->step(p_cpu.data(), g.data(), kN, {});
    gpu->step(p_dev.data(), g_dev.data(), kN, {});
  }
  const std::vector<float> p_gpu = p_dev.to_host();
  expect_close(p_gpu, p_cpu, kN, 1e-5, "params");
  for (int64_t i = kN; i < kN + kPad; ++i)
    ASSERT_EQ(p_gpu[i], kParamSentinel) << "write past the buffer at " << i;
  EXPECT_EQ(gpu->n_steps(), 50);
  const auto s_cpu = cpu->export_state(), s_gpu = gpu->export_state();
  ASSERT_EQ(s_cpu.slots.size(), s_gpu.slots.size());
  for (const auto& [name, values] : s_cpu.slots)
    expect_close(s_gpu.slots.at(name), values, kN, 1e-5, name);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, cuda_optim_vs_cpu,
    ::testing::Values(json{{"type", "sgd"}, {"lr", 0.01}},
                      json{
                          {"type", "sgd"}, {"lr", 0.01}, {"momentum", 0.9}, {"weight_decay", 1e-3}},
                      json{{"type", "adam"}, {"lr", 1e-3}},
                      json{{"type", "adam"}, {"lr", 1e-3}, {"weight_decay", 0.01}},
                      json{{"type", "adamw"}, {"lr", 1e-3}, {"weight_decay", 0.01}},
                      json{{"type", "adam"}, {"lr", 1e-3}, {"check_finite", false}}),
    [](const auto& info) {
      return info.param.at("type").template get<std::string>() + std::to_string(info.index);
    });

TEST(cuda_optim, NonFiniteGradientRejected) {
  SKIP_WITHOUT_CUDA();
  for (const char* type : {"sgd", "adam"}) {
    json cfg = {{"type", type}, {"lr", 0.1}};
    if (std::string(type) == "sgd") cfg["momentum"] = 0.9;
    auto opt = make_optimizer<float>(cfg, kN, Device::cuda);
    std::mt19937 rng(3);
    const std::vector<float> p0 = random_vector(kN, rng, 1.f);
    std::vector<float> g = random_vector(kN, rng, 1.f);
    auto p = Buffer<float>::from_host(p0, Device::cuda);
    auto g_dev = Buffer<float>::from_host(g, Device::cuda);
    opt->step(p.data(), g_dev.data(), kN, {});
    const std::vector<float> p_before = p.to_host();
    const auto state_before = opt->export_state();

    // Three bad entries in different blocks; the first is what the message must name.
    g[77777] = std::numeric_limits<float>::infinity();
    g[4242] = std::numeric_limits<float>::quiet_NaN();
    g[kN - 1] = -std::numeric_limits<float>::infinity();
    g_dev = Buffer<float>::from_host(g, Device::cuda);
    try {
      opt->step(p.data(), g_dev.data(), kN, {});
      ADD_FAILURE() << "expected InputError";
    } catch (const InputError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("3 non-finite"), std::string::npos) << what;
      EXPECT_NE(what.find("first at index 4242"), std::string::npos) << what;
    }
    EXPECT_EQ(p.to_host(), p_before) << type;
    EXPECT_EQ(opt->n_steps(), 1);
    EXPECT_EQ(opt->export_state().slots, state_before.slots) << type;
  }
}

TEST(cuda_optim, ResetAndImportMatchCpu) {
  SKIP_WITHOUT_CUDA();
  const json cfg = {{"type", "adam"}, {"lr", 1e-2}};
  const int64_t n = 1001;
  std::mt19937 rng(5);
  const std::vector<float> p0 = random_vector(n, rng, 1.f), g = random_vector(n, rng, 1.f);
  auto gpu = make_optimizer<float>(cfg, n, Device::cuda);
  auto p = Buffer<float>::from_host(p0, Device::cuda);
  auto g_dev = Buffer<float>::from_host(g, Device::cuda);
  for (int i = 0; i < 4; ++i) gpu->step(p.data(), g_dev.data(), n, {});
  gpu->reset();
  for (const auto& [name, values] : gpu->export_state().slots)
    for (float v : values) ASSERT_EQ(v, 0.f) << name;

  // State taken from the CPU after 3 steps carries on identically on the device.
  auto cpu = make_optimizer<float>(cfg, n, Device::cpu);
  std::vector<float> p_cpu = p0;
  for (int i = 0; i < 3; ++i) cpu->step(p_cpu.data(), g.data(), n, {});
  gpu->import_state(cpu->export_state());
  p = Buffer<float>::from_host(p_cpu, Device::cuda);
  for (int i = 0; i < 3; ++i) {
    cpu->step(p_cpu.data(), g.data(), n, {});
    gpu->step(p.data(), g_dev.data(), n, {});
  }
  EXPECT_EQ(gpu->n_steps(), 6);
  expect_close(p.to_host(), p_cpu, n, 1e-6, "params after import");
}

#ifdef MIRAD_HAVE_CUDA
TEST(cuda_optim, RunsOnGivenStream) {
  SKIP_WITHOUT_CUDA();
  cudaStream_t raw = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&raw, cudaStreamNonBlocking), cudaSuccess);
  const Stream stream{raw};
  const json cfg = {{"type", "adam"}, {"lr", 1e-2}, {"check_finite", false}};
  const int64_t n = 4099;
  std::mt19937 rng(9);
  std::vector<float> p_cpu = random_vector(n, rng, 1.f);
  const std::vector<float> g = random_vector(n, rng, 1.f);
  auto cpu = make_optimizer<float>(cfg, n, Device::cpu);
  auto gpu = make_optimizer<float>(cfg, n, Device::cuda);
  auto p = Buffer<float>::from_host(p_cpu, Device::cuda, stream);
  auto g_dev = Buffer<float>::from_host(g, Device::cuda, stream);
  // Asynchronous steps queued back to back; only to_host waits for the stream.
  for (int i = 0; i < 10; ++i) {
    cpu->step(p_cpu.data(), g.data(), n, {});
    gpu->step(p.data(), g_dev.data(), n, stream);
  }
  expect_close(p.to_host(stream), p_cpu, n, 1e-5, "params");
  ASSERT_EQ(cudaStreamDestroy(raw), cudaSuccess);
}
#endif

}  // namespace
}  // namespace mirad
