// CouplingFlow: the public face of the conditional affine-coupling flow. It validates shapes,
// devices and values, then dispatches to FlowCore on the CPU (float, double) or CUDA (float)
// backend. Parameters live outside the flow in one contiguous Buffer (tcnn style), so MAML can
// copy or adapt them with one memcpy and optimizers walk one array.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/buffer.h"
#include "engine/device.h"
#include "engine/flow_config.h"

namespace mirad {

template <typename T>
class FlowImpl;

template <typename T>
class CouplingFlow {
 public:
  CouplingFlow(const FlowConfig& cfg, Device device, Stream stream = {});
  ~CouplingFlow();
  CouplingFlow(const CouplingFlow&) = delete;
  CouplingFlow& operator=(const CouplingFlow&) = delete;
  CouplingFlow(CouplingFlow&&) noexcept;
  CouplingFlow& operator=(CouplingFlow&&) noexcept;

  const FlowConfig& config() const { return m_cfg; }
  const FlowLayout& layout() const { return m_layout; }
  int64_t n_params() const { return m_layout.n_params; }
  Device device() const { return m_device; }
  // The fixed permutation of block k (D indices): block input column perm[i] becomes column i.
  const std::vector<int32_t>& permutation(int64_t k) const { return m_perm_host.at(k); }

  // A parameter buffer of the right size on device(), filled with the seeded initial weights:
  // subnet weights uniform in +-1/sqrt(fan_in) (the output layer scaled by 0.1 so the flow
  // starts near the identity), biases and ActNorm zero.
  Buffer<T> init_params() const;
  // Data-dependent ActNorm initialisation (Glow): sets log-scale and bias so that the flow's
  // output on x has zero mean and unit variance per channel.
  void init_actnorm(Buffer<T>& params, MatrixView<const T> x, MatrixView<const T> c);

  // z = f(x | c) and per-sample NLL; returns the mean NLL. x is N x D, c is N x C (empty when
  // C == 0), z may be empty (not wanted); all on device(), contiguous. nll_host, if given,
  // receives the N per-sample values. Throws InputError naming the samples on NaN/Inf input
  // or non-finite NLL. Caches activations for backward() and hvp().
  double forward(const Buffer<T>& params, MatrixView<const T> x, MatrixView<const T> c,
                 MatrixView<T> z = {}, std::vector<T>* nll_host = nullptr);
  // Device pointer to the N per-sample NLL values of the last forward().
  const T* nll_device() const;
  // x = f^-1(z | c). Invalidates the forward cache.
  void inverse(const Buffer<T>& params, MatrixView<const T> z, MatrixView<const T> c,
               MatrixView<T> x);
  // Gradient of the mean NLL of the last forward() w.r.t. params (overwrites grad) and, when
  // grad_x is non-empty, w.r.t. x (N x D).
  void backward(const Buffer<T>& params, MatrixView<const T> c, Buffer<T>& grad,
                MatrixView<T> grad_x = {});
  // Exact Hessian-vector product H*v of the mean NLL of the last forward() w.r.t. params,
  // with the gradient as a by-product.
  void hvp(const Buffer<T>& params, MatrixView<const T> c, const Buffer<T>& v, Buffer<T>& grad,
           Buffer<T>& hv);

 private:
  void check_params(const Buffer<T>& params, const char* what) const;
  void check_rows(MatrixView<const T> m, int64_t cols, const char* what) const;
  void check_condition(MatrixView<const T> c, int64_t N) const;
  void check_cached(MatrixView<const T> c) const;

  FlowConfig m_cfg;
  FlowLayout m_layout;
  Device m_device;
  Stream m_stream;
  std::vector<std::vector<int32_t>> m_perm_host;
  std::unique_ptr<FlowImpl<T>> m_impl;
  int64_t m_cached_n = 0;  // rows of the last forward(); 0 = no valid cache
  const T* m_cached_c = nullptr;
};

extern template class CouplingFlow<float>;
extern template class CouplingFlow<double>;

}  // namespace mirad
