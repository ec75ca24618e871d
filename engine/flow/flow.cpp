// CouplingFlow: validation, permutations, initialisation and backend dispatch.
#include "engine/flow/flow.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "core/error.h"
#include "engine/flow/flow_core.h"
#include "kernels/quantiles.h"
#include "kernels/flow_ops_cpu.h"
#ifdef MIRAD_HAVE_CUDA
#include "kernels/flow_ops_cuda.h"
#endif

namespace mirad {

// Type-erased FlowCore so the facade can hold any backend.
template <typename T>
class FlowImpl {
 public:
  virtual ~FlowImpl() = default;
  virtual void forward(const T* p, const T* x, const T* c, int64_t N, T* z) = 0;
  virtual void inverse(const T* p, const T* z, const T* c, int64_t N, T* x) = 0;
  virtual void backward(const T* p, const T* c, T* g, T* gx) = 0;
  virtual void hvp(const T* p, const T* c, const T* v, T* g, T* hv) = 0;
  // Indices of rows of x (N x D, ld) holding NaN or Inf.
  virtual std::vector<int64_t> nonfinite_rows(const T* x, int64_t N, int64_t D) = 0;
  virtual const T* nll() const = 0;
  virtual const T* last_block_output() const = 0;
  virtual void synchronize() = 0;
  virtual void set_tf32(bool on) = 0;
  virtual void set_bf16(bool on) = 0;
  virtual void set_tasks(int64_t B) = 0;
  virtual void set_keep_adjoints(bool on) = 0;
};

template <typename T, class Ops>
class FlowImplT final : public FlowImpl<T> {
 public:
  FlowImplT(const FlowConfig& cfg, Stream stream, const std::vector<int32_t>& perm,
            const std::vector<int32_t>& inv_perm)
      : m_ops(make_ops(stream)),
        m_perm(Buffer<int32_t>::from_host(perm, Ops::device, stream)),
        m_inv_perm(Buffer<int32_t>::from_host(inv_perm, Ops::device, stream)),
        m_core(cfg, *m_ops, m_perm.data(), m_inv_perm.data()) {}

  void forward(const T* p, const T* x, const T* c, int64_t N, T* z) override {
    m_nll.reserve_discard(N);
    m_core.forward(p, x, c, N, z, m_nll.data());
  }
  void inverse(const T* p, const T* z, const T* c, int64_t N, T* x) override {
    m_core.inverse(p, z, c, N, x);
  }
  void backward(const T* p, const T* c, T* g, T* gx) override { m_core.backward(p, c, g, gx); }
  void hvp(const T* p, const T* c, const T* v, T* g, T* hv) override {
    m_core.hvp(p, c, v, g, hv);
  }
  std::vector<int64_t> nonfinite_rows(const T* x, int64_t N, int64_t D) override {
    // The flag buffer persists: a cudaMalloc/cudaFree per call would serialise the device.
    m_flags.reserve_discard(N);
    m_ops->nonfinite_rows(N, D, x, D, m_flags.data());
    std::vector<uint8_t> h(N);
    mem::copy(h.data(), Device::cpu, m_flags.data(), Ops::device, N, m_ops->stream);
    mem::synchronize(m_ops->stream);
    std::vector<int64_t> bad;
    for (int64_t i = 0; i < N; ++i)
      if (h[i]) bad.push_back(i);
    return bad;
  }
  void set_tasks(int64_t B) override { m_core.set_tasks(B); }
  void set_keep_adjoints(bool on) override { m_core.set_keep_adjoints(on); }
  const T* nll() const override { return m_nll.data(); }
  const T* last_block_output() const override { return m_core.last_block_output(); }
  void synchronize() override { m_ops->synchronize(); }
  void set_tf32(bool on) override {
    if constexpr (Ops::device == Device::cuda) m_ops->set_tf32(on);
    else (void)on;  // the CPU has no TF32: FP32 stays exact there
  }
  void set_bf16(bool on) override {
    if constexpr (Ops::device == Device::cuda) m_ops->set_bf16(on);
    else (void)on;
  }

 private:
  static std::unique_ptr<Ops> make_ops(Stream s) {
    if constexpr (Ops::device == Device::cpu) {
      auto o = std::make_unique<Ops>();
      o->stream = s;
      return o;
    } else {
      return std::make_unique<Ops>(s);
    }
  }
  std::unique_ptr<Ops> m_ops;
  Buffer<int32_t> m_perm, m_inv_perm;
  FlowCore<Ops> m_core;
  Buffer<T> m_nll{0, Ops::device};
  Buffer<uint8_t> m_flags{0, Ops::device};
};

namespace {

// Fisher-Yates on mt19937_64 with an explicit modulo, so saved models reproduce on any
// standard library (std::shuffle's algorithm is implementation-defined).
std::vector<int32_t> random_permutation(int64_t n, std::mt19937_64& rng) {
  std::vector<int32_t> p(n);
  for (int64_t i = 0; i < n; ++i) p[i] = static_cast<int32_t>(i);
  for (int64_t i = n - 1; i > 0; --i) std::swap(p[i], p[rng() % static_cast<uint64_t>(i + 1)]);
  return p;
}

double uniform_pm1(std::mt19937_64& rng) {
  return (static_cast<double>(rng() >> 11) * 0x1.0p-53) * 2.0 - 1.0;
}

std::string list_rows(const std::vector<int64_t>& rows) {
  std::string s;
  for (size_t i = 0; i < rows.size() && i < 10; ++i) s += (i ? ", " : "") + std::to_string(rows[i]);
  if (rows.size() > 10) s += fmt::format(", ... ({} in all)", rows.size());
  return s;
}

// True when a flat array (parameters, a direction) holds NaN or Inf. The row kernel gives each
// row one warp, so a flat array of millions is scanned as rows of 1024 plus a tail row.
template <typename T>
bool any_nonfinite(FlowImpl<T>& impl, const T* p, int64_t n) {
  const int64_t width = 1024, rows = n / width, tail = n % width;
  if (rows > 0 && !impl.nonfinite_rows(p, rows, width).empty()) return true;
  return tail > 0 && !impl.nonfinite_rows(p + rows * width, 1, tail).empty();
}

}  // namespace

template <typename T>
CouplingFlow<T>::CouplingFlow(const FlowConfig& cfg, Device device, Stream stream)
    : m_cfg(cfg), m_layout(cfg), m_device(device), m_stream(stream) {
  std::mt19937_64 rng(cfg.seed ^ 0x6d69726164ULL);  // "mirad": permutations get their own stream
  std::vector<int32_t> perm, inv;
  for (int64_t k = 0; k < cfg.n_blocks; ++k) {
    auto p = random_permutation(cfg.dim, rng);
    std::vector<int32_t> ip(cfg.dim);
    for (int64_t i = 0; i < cfg.dim; ++i) ip[p[i]] = static_cast<int32_t>(i);
    perm.insert(perm.end(), p.begin(), p.end());
    inv.insert(inv.end(), ip.begin(), ip.end());
    m_perm_host.push_back(std::move(p));
  }
  if (device == Device::cpu) {
    m_impl = std::make_unique<FlowImplT<T, CpuFlowOps<T>>>(cfg, stream, perm, inv);
  } else {
#ifdef MIRAD_HAVE_CUDA
    if constexpr (std::is_same_v<T, float>) {
      CHECK_INPUT(cuda_available(), "flow: CUDA device requested but none is available");
      m_impl = std::make_unique<FlowImplT<T, CudaFlowOps>>(cfg, stream, perm, inv);
    } else {
      throw InputError("flow: the CUDA backend is float32 only; use the CPU for float64");
    }
#else
    throw InputError("flow: CUDA device requested but this build has no CUDA backend");
#endif
  }
}

template <typename T>
CouplingFlow<T>::~CouplingFlow() = default;

template <typename T>
void CouplingFlow<T>::set_tf32(bool on) {
  m_impl->set_tf32(on);
}
template <typename T>
void CouplingFlow<T>::set_precision(const std::string& precision) {
  CHECK_INPUT(precision == "fp32" || precision == "tf32" || precision == "bf16",
              "flow: precision must be fp32, tf32 or bf16 (got '{}')", precision);
  m_impl->set_tf32(precision == "tf32");
  m_impl->set_bf16(precision == "bf16");
}

template <typename T>
void CouplingFlow<T>::set_tasks(int64_t B) {
  CHECK_INPUT(B >= 1 && B <= 65535, "flow: tasks per call must be in [1, 65535] (got {})", B);
  m_impl->set_tasks(B);
  m_tasks = B;
  m_cache = {};
}
template <typename T>
void CouplingFlow<T>::set_keep_adjoints(bool on) {
  m_impl->set_keep_adjoints(on);
}
template <typename T>
CouplingFlow<T>::CouplingFlow(CouplingFlow&&) noexcept = default;
template <typename T>
CouplingFlow<T>& CouplingFlow<T>::operator=(CouplingFlow&&) noexcept = default;

template <typename T>
Buffer<T> CouplingFlow<T>::init_params() const {
  std::mt19937_64 rng(m_cfg.seed);
  std::vector<T> h(m_layout.n_params, T(0));
  const int64_t H = m_cfg.hidden_width(), fan1 = m_cfg.d1() + m_cfg.cond_dim;
  for (const BlockOffsets& b : m_layout.blocks) {
    const double bound1 = 1.0 / std::sqrt(double(fan1)), bound2 = 0.1 / std::sqrt(double(H));
    for (int64_t i = 0; i < H * fan1; ++i) h[b.w1 + i] = T(bound1 * uniform_pm1(rng));
    for (int64_t i = 0; i < 2 * m_cfg.d2() * H; ++i) h[b.w2 + i] = T(bound2 * uniform_pm1(rng));
  }
  return Buffer<T>::from_host(h, m_device, m_stream);
}

template <typename T>
void CouplingFlow<T>::check_params(VecView<const T> p, const char* what) const {
  CHECK_INPUT(p.size == batch_params(),
              "flow: {} buffer has {} values, this flow (dim {}, cond_dim {}, {} blocks, "
              "hidden {}) has {} parameters{}",
              what, p.size, m_cfg.dim, m_cfg.cond_dim, m_cfg.n_blocks, m_cfg.hidden_width(),
              batch_params(),
              m_tasks > 1 ? fmt::format(" ({} tasks of {})", m_tasks, m_layout.n_params) : "");
  CHECK_INPUT(p.data != nullptr, "flow: {} buffer is null", what);
  CHECK_INPUT(p.device == m_device, "flow: {} buffer is on {}, the flow on {}", what,
              device_name(p.device), device_name(m_device));
}

template <typename T>
void CouplingFlow<T>::check_rows(MatrixView<const T> m, int64_t cols, const char* what) const {
  CHECK_INPUT(m.rows > 0, "flow: {} has zero rows", what);
  CHECK_INPUT(m.cols == cols, "flow: {} has {} columns, expected {}", what, m.cols, cols);
  CHECK_INPUT(m.contiguous(), "flow: {} must be contiguous (ld {} != cols {})", what, m.ld, m.cols);
  CHECK_INPUT(m.data != nullptr, "flow: {} is null", what);
  CHECK_INPUT(m.device == m_device, "flow: {} is on {}, the flow on {}", what,
              device_name(m.device), device_name(m_device));
}

template <typename T>
void CouplingFlow<T>::check_condition(MatrixView<const T> c, int64_t N) const {
  if (m_cfg.cond_dim == 0) {
    CHECK_INPUT(c.data == nullptr && c.cols == 0,
                "flow: a condition was given but the flow has cond_dim 0");
    return;
  }
  check_rows(c, m_cfg.cond_dim, "condition");
  CHECK_INPUT(c.rows == N, "flow: condition has {} rows, input has {}", c.rows, N);
}

namespace {

// 64-bit mixing hash of a byte range (splitmix64 finaliser per word). Not cryptographic: it
// only has to notice that a buffer was changed in place between forward() and hvp().
uint64_t hash_bytes(const void* p, std::size_t n, uint64_t h) {
  const auto* b = static_cast<const unsigned char*>(p);
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, b + i, 8);
    h = mix(h ^ w) + 0x9e3779b97f4a7c15ULL;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, b + i, n - i);
  return mix(h ^ tail ^ (uint64_t(n) << 56));
}

}  // namespace

template <typename T>
uint64_t CouplingFlow<T>::fingerprint(VecView<const T> params, MatrixView<const T> x,
                                      MatrixView<const T> c) const {
  uint64_t h = 0x6d69726164ULL;
  auto add = [&](const T* p, int64_t n) {
    if (!p || n == 0) return;
    if (m_device == Device::cpu) {
      h = hash_bytes(p, sizeof(T) * n, h);
    } else {
      std::vector<T> host(n);
      mem::copy(host.data(), Device::cpu, p, m_device, sizeof(T) * n, m_stream);
      mem::synchronize(m_stream);
      h = hash_bytes(host.data(), sizeof(T) * n, h);
    }
  };
  add(params.data, params.size);
  add(x.data, x.numel());
  add(c.data, c.numel());
  return h;
}

template <typename T>
void CouplingFlow<T>::check_cached(VecView<const T> params, MatrixView<const T> x,
                                   MatrixView<const T> c) const {
  CHECK_INPUT(m_cache.n > 0, "flow: backward()/hvp() need a preceding forward()");
  CHECK_INPUT(params.data == m_cache.params && x.data == m_cache.x && c.data == m_cache.c &&
                  x.rows == m_cache.n,
              "flow: backward()/hvp() must get the parameters, input and condition of the last "
              "forward() (use grad_at()/hvp_at() to run both)");
  if (m_checks.fingerprint)
    CHECK_INPUT(fingerprint(params, x, c) == m_cache.fingerprint,
                "flow: parameters, input or condition changed since forward(): the cached "
                "activations are stale (use grad_at()/hvp_at())");
}

template <typename T>
void CouplingFlow<T>::check_values(VecView<const T> params, MatrixView<const T> x,
                                   MatrixView<const T> c) {
  check_params(params, "parameter");
  check_rows(x, m_cfg.dim, "input x");
  check_task_rows(x.rows);
  check_condition(c, x.rows);
  m_cache = {};
  if (m_checks.inputs) {
    auto bad = m_impl->nonfinite_rows(x.data, x.rows, m_cfg.dim);
    CHECK_INPUT(bad.empty(), "flow: input x has NaN or Inf in samples {}", list_rows(bad));
    if (m_cfg.cond_dim > 0) {
      bad = m_impl->nonfinite_rows(c.data, x.rows, m_cfg.cond_dim);
      CHECK_INPUT(bad.empty(), "flow: condition has NaN or Inf in samples {}", list_rows(bad));
    }
  }
  if (m_checks.params)
    CHECK_INPUT(!any_nonfinite(*m_impl, params.data, batch_params()),
                "flow: parameters hold NaN or Inf (diverged training?)");
}

template <typename T>
void CouplingFlow<T>::check_task_rows(int64_t N) const {
  CHECK_INPUT(N % m_tasks == 0, "flow: {} rows do not split into {} tasks of equal size", N,
              m_tasks);
}

template <typename T>
void CouplingFlow<T>::finish(VecView<const T> params, MatrixView<const T> x,
                             MatrixView<const T> c) {
  m_cache = {params.data, x.data, c.data, x.rows, 0};
  if (m_checks.fingerprint) m_cache.fingerprint = fingerprint(params, x, c);
}

template <typename T>
void CouplingFlow<T>::forward_async(VecView<const T> params, MatrixView<const T> x,
                                    MatrixView<const T> c, MatrixView<T> z) {
  check_values(params, x, c);
  if (z.data) {
    check_rows(z, m_cfg.dim, "output z");
    CHECK_INPUT(z.rows == x.rows, "flow: output z has {} rows, input has {}", z.rows, x.rows);
  }
  m_impl->forward(params.data, x.data, c.data, x.rows, z.data);
  finish(params, x, c);
}

template <typename T>
double CouplingFlow<T>::forward(VecView<const T> params, MatrixView<const T> x,
                                MatrixView<const T> c, MatrixView<T> z,
                                std::vector<T>* nll_host) {
  forward_async(params, x, c, z);
  const int64_t N = x.rows;
  std::vector<T> nll(N);
  mem::copy(nll.data(), Device::cpu, m_impl->nll(), m_device, sizeof(T) * N, m_stream);
  mem::synchronize(m_stream);
  double sum = 0;
  std::vector<int64_t> bad;
  for (int64_t i = 0; i < N; ++i) {
    if (!std::isfinite(nll[i])) bad.push_back(i);
    sum += nll[i];
  }
  if (m_checks.finite_nll && !bad.empty()) {
    m_cache = {};
    throw InputError(fmt::format(
        "flow: NLL is not finite for samples {} (input far out of range?)", list_rows(bad)));
  }
  if (nll_host) *nll_host = std::move(nll);
  return sum / double(N);
}

template <typename T>
const T* CouplingFlow<T>::nll_device() const {
  CHECK_INPUT(m_cache.n > 0, "flow: nll_device() needs a preceding forward()");
  return m_impl->nll();
}

template <typename T>
void CouplingFlow<T>::inverse(VecView<const T> params, MatrixView<const T> z,
                              MatrixView<const T> c, MatrixView<T> x) {
  check_params(params, "parameter");
  check_rows(z, m_cfg.dim, "input z");
  check_rows(x, m_cfg.dim, "output x");
  CHECK_INPUT(x.rows == z.rows, "flow: output x has {} rows, z has {}", x.rows, z.rows);
  check_task_rows(z.rows);
  check_condition(c, z.rows);
  auto bad = m_impl->nonfinite_rows(z.data, z.rows, m_cfg.dim);
  CHECK_INPUT(bad.empty(), "flow: input z has NaN or Inf in samples {}", list_rows(bad));
  // The subnet's ReLU maps NaN to 0, so a NaN condition or parameter would come out as
  // plausible finite numbers: check them, and the result, explicitly.
  if (m_cfg.cond_dim > 0) {
    bad = m_impl->nonfinite_rows(c.data, z.rows, m_cfg.cond_dim);
    CHECK_INPUT(bad.empty(), "flow: condition has NaN or Inf in samples {}", list_rows(bad));
  }
  CHECK_INPUT(!any_nonfinite(*m_impl, params.data, batch_params()),
              "flow: parameters hold NaN or Inf (diverged training?)");
  m_cache = {};
  m_impl->inverse(params.data, z.data, c.data, z.rows, x.data);
  m_impl->synchronize();
  bad = m_impl->nonfinite_rows(x.data, z.rows, m_cfg.dim);
  CHECK_INPUT(bad.empty(), "flow: inverse overflowed (NaN or Inf) in samples {}; z is far "
              "outside what the flow maps to", list_rows(bad));
}

template <typename T>
void CouplingFlow<T>::backward(VecView<const T> params, MatrixView<const T> x,
                               MatrixView<const T> c, VecView<T> grad, MatrixView<T> grad_x) {
  check_params(params, "parameter");
  check_params(grad, "gradient");
  CHECK_INPUT(grad.data != params.data, "flow: the gradient buffer must not be the parameters");
  check_cached(params, x, c);
  if (grad_x.data) {
    check_rows(grad_x, m_cfg.dim, "input gradient");
    CHECK_INPUT(grad_x.rows == m_cache.n, "flow: input gradient has {} rows, forward had {}",
                grad_x.rows, m_cache.n);
  }
  m_impl->backward(params.data, c.data, grad.data, grad_x.data);
  if (m_checks.host_sync) m_impl->synchronize();
}

template <typename T>
void CouplingFlow<T>::hvp(VecView<const T> params, MatrixView<const T> x, MatrixView<const T> c,
                          VecView<const T> v, VecView<T> grad, VecView<T> hv) {
  check_params(params, "parameter");
  check_params(v, "direction v");
  const bool want_grad = grad.data != nullptr || grad.size != 0;
  if (want_grad) check_params(grad, "gradient");
  check_params(hv, "Hessian-vector product");
  // The reverse pass writes grad and hv while it still reads params and v.
  CHECK_INPUT((!want_grad || (grad.data != params.data && grad.data != v.data &&
                              hv.data != grad.data)) &&
                  hv.data != params.data && hv.data != v.data,
              "flow: hvp() needs separate buffers for params, v, grad and hv");
  check_cached(params, x, c);
  if (m_checks.params)
    CHECK_INPUT(!any_nonfinite(*m_impl, v.data, batch_params()),
                "flow: direction v holds NaN or Inf");
  m_impl->hvp(params.data, c.data, v.data, want_grad ? grad.data : nullptr, hv.data);
  if (m_checks.host_sync) m_impl->synchronize();
}

template <typename T>
double CouplingFlow<T>::grad_at(VecView<const T> params, MatrixView<const T> x,
                                MatrixView<const T> c, VecView<T> grad) {
  double loss = std::numeric_limits<double>::quiet_NaN();
  if (m_checks.host_sync || m_checks.finite_nll)
    loss = forward(params, x, c);
  else
    forward_async(params, x, c);
  backward(params, x, c, grad);
  return loss;
}

template <typename T>
double CouplingFlow<T>::hvp_at(VecView<const T> params, MatrixView<const T> x,
                               MatrixView<const T> c, VecView<const T> v, VecView<T> grad,
                               VecView<T> hv) {
  double loss = std::numeric_limits<double>::quiet_NaN();
  if (m_checks.host_sync || m_checks.finite_nll)
    loss = forward(params, x, c);
  else
    forward_async(params, x, c);
  hvp(params, x, c, v, grad, hv);
  return loss;
}

template <typename T>
void CouplingFlow<T>::init_actnorm(VecView<T> params, MatrixView<const T> x,
                                   MatrixView<const T> c) {
  CHECK_INPUT(m_tasks == 1, "flow: init_actnorm() is single-task (set_tasks(1) first)");
  check_params(params, "parameter");
  const int64_t D = m_cfg.dim;
  std::vector<T> h(params.size);
  mem::copy(h.data(), Device::cpu, params.data, m_device, sizeof(T) * h.size(), m_stream);
  mem::synchronize(m_stream);
  const std::vector<T> original = h;
  auto upload = [&](const std::vector<T>& src) {
    mem::copy(params.data, m_device, src.data(), Device::cpu, sizeof(T) * src.size(), m_stream);
    mem::synchronize(m_stream);
  };
  for (int64_t j = 0; j < D; ++j) h[m_layout.log_scale + j] = T(0), h[m_layout.bias + j] = T(0);
  upload(h);
  const FlowChecks saved = m_checks;
  try {
    m_checks.finite_nll = true;
    forward(params, x, c);
    m_checks = saved;
  } catch (...) {
    m_checks = saved;
    // A rejected input must not cost the caller its parameters.
    upload(original);
    throw;
  }
  const int64_t N = x.rows;
  std::vector<T> y(N * D);
  mem::copy(y.data(), Device::cpu, m_impl->last_block_output(), m_device, sizeof(T) * N * D,
            m_stream);
  mem::synchronize(m_stream);
  // Robust statistics: the median, and the deviation of the values winsorised to their 5th
  // and 95th percentiles. Training data is contaminated, and a few extreme rows must not set a
  // channel's scale; but the IQR alone is ~0 for sparse channels (mostly one value), which
  // made their few other rows' NLL explode (1e4 per row), so it is not used alone.
  std::vector<double> col(N);
  for (int64_t j = 0; j < D; ++j) {
    int64_t m = 0;
    for (int64_t n = 0; n < N; ++n)
      if (std::isfinite(double(y[n * D + j]))) col[m++] = y[n * D + j];
    double center = 0, scale = 0;
    if (m > 0) {
      const auto q = quantiles_cpu(col.data(), m, {0.05, 0.5, 0.95});
      center = q[1];
      double sq = 0, sq_all = 0;
      for (int64_t n = 0; n < m; ++n) {
        const double w = std::clamp(col[n], q[0], q[2]) - center;
        sq += w * w;
        sq_all += (col[n] - center) * (col[n] - center);
      }
      scale = std::sqrt(sq / double(m));
      // Fewer than 5% of the rows differ from the median: their full deviation, then unit.
      if (!(scale > 1e-12)) scale = std::sqrt(sq_all / double(m));
      if (!(scale > 1e-12) || !std::isfinite(scale)) scale = 1.0;
    }
    const double sd = scale + 1e-6;
    h[m_layout.log_scale + j] = T(-std::log(sd));
    h[m_layout.bias + j] = T(-center / sd);
  }
  upload(h);
  m_cache = {};
}

template class CouplingFlow<float>;
template class CouplingFlow<double>;

}  // namespace mirad
