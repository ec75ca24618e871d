// Shared helpers for the flow tests: random data and non-trivial random parameters.
#pragma once

#include <cmath>
#include <random>
#include <vector>

#include "core/buffer.h"
#include "engine/flow/flow.h"

namespace mirad::test {

// A flow of dimension D, condition C, K blocks and hidden width H (0: the default 2*d).
inline FlowConfig flow_config(int64_t D, int64_t C, int64_t K, int64_t H, uint64_t seed) {
  FlowConfig c;
  c.dim = D, c.cond_dim = C, c.n_blocks = K, c.hidden = H, c.seed = seed;
  return c;
}

// A host vector seen as a row-major rows x cols CPU matrix.
template <typename T>
MatrixView<const T> cpu_mat(const std::vector<T>& v, int64_t rows, int64_t cols) {
  return {v.data(), rows, cols, Device::cpu};
}
template <typename T>
MatrixView<T> cpu_mat(std::vector<T>& v, int64_t rows, int64_t cols) {
  return {v.data(), rows, cols, Device::cpu};
}

template <typename T>
std::vector<T> randn(int64_t n, uint64_t seed, double scale = 1.0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<T> v(n);
  for (auto& x : v) x = T(dist(rng));
  return v;
}

// The seeded initial parameters plus noise everywhere (ActNorm and biases included), so that
// every coupling is far from the identity and every parameter has a visible effect.
template <typename T>
Buffer<T> random_params(const CouplingFlow<T>& flow, uint64_t seed, double noise = 0.3) {
  auto h = flow.init_params().to_host();
  auto n = randn<double>(h.size(), seed, noise);
  for (size_t i = 0; i < h.size(); ++i) h[i] = T(double(h[i]) + n[i]);
  return Buffer<T>::from_host(h, flow.device());
}

template <typename T>
double rel_error(const std::vector<T>& a, const std::vector<T>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

}  // namespace mirad::test
