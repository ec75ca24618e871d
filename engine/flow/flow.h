// CouplingFlow: the public face of the conditional affine-coupling flow. It validates shapes,
// devices and values, then dispatches to FlowCore on the CPU (float, double) or CUDA (float)
// backend. Parameters live outside the flow in one contiguous Buffer (tcnn style), so MAML can
// copy or adapt them with one memcpy and optimizers walk one array.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"
#include "engine/flow/flow_config.h"

namespace mirad {

template <typename T>
class FlowImpl;

// Which validations forward/backward/hvp run. Each one that is on may synchronise with the
// host (a flag or a fingerprint is read back), so the hot path of training turns them off and
// checks once per round instead. Defaults: everything on.
struct FlowChecks {
  bool inputs = true;       // NaN/Inf in x and the condition: InputError naming the samples
  bool params = true;       // NaN/Inf in the parameters (and in an HVP direction)
  bool finite_nll = true;   // a non-finite per-sample NLL is an InputError; off: it is reported
                            // as NaN/Inf in the per-sample values and the mean
  bool fingerprint = true;  // backward()/hvp() verify that params, x and c still hold what
                            // forward() saw (a hash; a copy to the host on CUDA)
  bool host_sync = true;    // backward()/hvp() return with the work finished; off: queued on
                            // the stream only
  static FlowChecks none() { return {false, false, false, false, false}; }
};

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
  // Batched tasks (MAML's meta-batch in one pass): after set_tasks(B), every parameter-shaped
  // buffer (params, grad, v, hv) holds B parameter vectors one after another (batch_params()
  // values), x and c hold B equal blocks of rows, and task b's rows are transformed by task b's
  // parameters only. Losses, gradients and HVPs are then those of each task's own mean NLL, as
  // if each task ran alone; every GEMM is one strided-batched call. Default 1. Invalidates the
  // forward cache. init_params() and init_actnorm() stay single-task.
  void set_tasks(int64_t B);
  int64_t tasks() const { return m_tasks; }
  // Keep backward()'s reverse-pass adjoints (K x N x (D + hidden) values) so that an hvp() on
  // the same forward cache reuses them: two GEMMs per block fewer. For MAML's backward sweep,
  // whose first HVP follows the inner step's last gradient. Off by default.
  void set_keep_adjoints(bool on);
  int64_t batch_params() const { return m_tasks * m_layout.n_params; }
  Device device() const { return m_device; }
  Stream stream() const { return m_stream; }
  const FlowChecks& checks() const { return m_checks; }
  void set_checks(const FlowChecks& checks) { m_checks = checks; }
  // CUDA: the GEMMs on TF32 tensor cores (a no-op on the CPU, which stays FP32).
  void set_tf32(bool on);
  // CUDA: the flow's GEMM precision, "fp32" (exact FP32, the default), "tf32" or "bf16"
  // (tensor cores; BF16 products with FP32 accumulation, operands stay FP32 in memory). The
  // CPU accepts all three and stays FP32. Anything else is an InputError.
  void set_precision(const std::string& precision);
  // The fixed permutation of block k (D indices): block input column perm[i] becomes column i.
  const std::vector<int32_t>& permutation(int64_t k) const { return m_perm_host.at(k); }

  // A parameter buffer of the right size on device(), filled with the seeded initial weights:
  // subnet weights uniform in +-1/sqrt(fan_in) (the output layer scaled by 0.1 so the flow
  // starts near the identity), biases and ActNorm zero.
  Buffer<T> init_params() const;
  // Data-dependent ActNorm initialisation (Glow): sets log-scale and bias so that the flow's
  // output on x is centred with unit scale per channel, by the median and the deviation of
  // the values winsorised at their 5th/95th percentiles (robust to the contaminants a
  // training set holds) rather than mean and variance.
  void init_actnorm(VecView<T> params, MatrixView<const T> x, MatrixView<const T> c);

  // z = f(x | c) and per-sample NLL; returns the mean NLL. params holds exactly n_params()
  // values (a Buffer or a view into a larger one); x is N x D, c is N x C (empty when C == 0),
  // z may be empty (not wanted); all on device(), contiguous. nll_host, if given, receives the
  // N per-sample values. With the default checks, NaN/Inf input or a non-finite NLL is an
  // InputError naming the samples. Caches activations for backward() and hvp(), tied to the
  // params, x and c given here.
  double forward(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
                 MatrixView<T> z = {}, std::vector<T>* nll_host = nullptr);
  // forward() without reading anything back: the per-sample NLL stays at nll_device(). Runs
  // the enabled input/parameter checks only (and no host work at all with FlowChecks::none()).
  void forward_async(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
                     MatrixView<T> z = {});
  // Device pointer to the N per-sample NLL values of the last forward().
  const T* nll_device() const;
  // x = f^-1(z | c). Invalidates the forward cache.
  void inverse(VecView<const T> params, MatrixView<const T> z, MatrixView<const T> c,
               MatrixView<T> x);
  // Gradient of the mean NLL of the last forward() w.r.t. params (overwrites grad) and, when
  // grad_x is non-empty, w.r.t. x (N x D). params, x and c must be those of that forward():
  // the same buffers (always checked) with the same contents (checked by the fingerprint).
  void backward(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
                VecView<T> grad, MatrixView<T> grad_x = {});
  // Exact Hessian-vector product H*v of the mean NLL of the last forward() w.r.t. params,
  // with the gradient as a by-product when grad is non-empty (an empty grad skips the
  // parameter-gradient GEMMs). Same rule as backward() for params, x and c.
  void hvp(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
           VecView<const T> v, VecView<T> grad, VecView<T> hv);
  // forward() then backward() / hvp(): the forms that cannot use a stale cache. Return the
  // mean NLL (NaN when checks().finite_nll is off and host_sync is off: nothing is read back).
  double grad_at(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
                 VecView<T> grad);
  double hvp_at(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
                VecView<const T> v, VecView<T> grad, VecView<T> hv);

 private:
  // What produced the forward cache: buffers, size and (with the fingerprint check) contents.
  struct CacheKey {
    const T* params = nullptr;
    const T* x = nullptr;
    const T* c = nullptr;
    int64_t n = 0;  // 0 = no valid cache
    uint64_t fingerprint = 0;
  };
  void check_params(VecView<const T> p, const char* what) const;
  void check_rows(MatrixView<const T> m, int64_t cols, const char* what) const;
  void check_condition(MatrixView<const T> c, int64_t N) const;
  void check_task_rows(int64_t N) const;
  void check_cached(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c) const;
  void check_values(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c);
  uint64_t fingerprint(VecView<const T> params, MatrixView<const T> x,
                       MatrixView<const T> c) const;
  void finish(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c);

  FlowConfig m_cfg;
  FlowLayout m_layout;
  Device m_device;
  Stream m_stream;
  FlowChecks m_checks;
  std::vector<std::vector<int32_t>> m_perm_host;
  std::unique_ptr<FlowImpl<T>> m_impl;
  CacheKey m_cache;
  int64_t m_tasks = 1;
};

extern template class CouplingFlow<float>;
extern template class CouplingFlow<double>;

}  // namespace mirad
