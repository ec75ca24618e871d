// MAML meta-gradient: inner SGD iterates, the query gradient, and the backward sweep of HVPs.
#include "engine/training/maml.h"

#include "core/error.h"
#include "core/nvtx.h"
#include "kernels/vec_ops.h"

namespace mirad {

template <typename T>
void MamlWorkspace<T>::ensure(int64_t n_inner, int64_t n_params, Device device) {
  auto fit = [&](Buffer<T>& b) {
    if (int64_t(b.size()) != n_params || b.device() != device) b = Buffer<T>(n_params, device);
  };
  if (int64_t(iterates.size()) < n_inner) iterates.resize(n_inner);
  for (auto& b : iterates) fit(b);
  fit(grad), fit(v), fit(hv);
}

namespace {

// theta_{k+1} = theta_k - alpha * g, for k = 0..n-1, each into ws.iterates[k]. Leaves flow_s's
// cache at theta_{n-1} (the last support forward), which the first HVP of the sweep reuses.
template <typename T>
double run_inner(CouplingFlow<T>& flow_s, VecView<const T> theta0, MatrixView<const T> xs,
                 MatrixView<const T> cs, int64_t n_inner, T alpha, MamlWorkspace<T>& ws) {
  const int64_t P = flow_s.batch_params();
  const Device dev = flow_s.device();
  const Stream s = flow_s.stream();
  double first_loss = 0;
  VecView<const T> cur = theta0;
  for (int64_t k = 0; k < n_inner; ++k) {
    const double loss = flow_s.grad_at(cur, xs, cs, ws.grad);
    if (k == 0) first_loss = loss;
    T* next = ws.iterates[k].data();
    mem::copy(next, dev, cur.data, dev, sizeof(T) * P, s);
    vec::axpy<T>(P, -alpha, ws.grad.data(), next, dev, s);
    cur = ws.iterates[k];
  }
  return first_loss;
}

}  // namespace

template <typename T>
void inner_adapt(CouplingFlow<T>& flow_s, VecView<const T> theta0, MatrixView<const T> xs,
                 MatrixView<const T> cs, int64_t n_inner, T alpha, VecView<T> theta_n,
                 MamlWorkspace<T>& ws) {
  CHECK_INPUT(n_inner >= 1, "maml: n_inner must be >= 1 (got {})", n_inner);
  CHECK_INPUT(theta_n.size == flow_s.batch_params() && theta_n.device == flow_s.device(),
              "maml: adapted-parameter buffer does not fit the flow");
  ws.ensure(n_inner, flow_s.batch_params(), flow_s.device());
  run_inner(flow_s, theta0, xs, cs, n_inner, alpha, ws);
  mem::copy(theta_n.data, theta_n.device, ws.iterates[n_inner - 1].data(), flow_s.device(),
            sizeof(T) * theta_n.size, flow_s.stream());
  mem::synchronize(flow_s.stream());
}

template <typename T>
MetaGradientInfo meta_gradient(CouplingFlow<T>& flow_s, CouplingFlow<T>& flow_q,
                               VecView<const T> theta0, const TaskData<T>& task, int64_t n_inner,
                               T alpha, bool second_order, VecView<T> meta_grad,
                               MamlWorkspace<T>& ws) {
  NVTX_RANGE("maml_task");
  const int64_t P = flow_s.batch_params();
  const Device dev = flow_s.device();
  const Stream s = flow_s.stream();
  CHECK_INPUT(n_inner >= 1, "maml: n_inner must be >= 1 (got {})", n_inner);
  CHECK_INPUT(flow_q.batch_params() == P && flow_q.tasks() == flow_s.tasks() &&
                  flow_q.device() == dev,
              "maml: support and query flows differ");
  CHECK_INPUT(meta_grad.size == P && meta_grad.device == dev,
              "maml: meta-gradient buffer has {} values on {}, the flow {} on {}", meta_grad.size,
              device_name(meta_grad.device), P, device_name(dev));
  CHECK_INPUT(meta_grad.data != theta0.data, "maml: meta-gradient must not alias theta_0");
  ws.ensure(n_inner, P, dev);
  // The sweep's first HVP is at the inner step's last gradient: it reuses that reverse pass.
  flow_s.set_keep_adjoints(second_order);
  MetaGradientInfo info;
  info.support_loss = run_inner(flow_s, theta0, task.xs, task.cs, n_inner, alpha, ws);
  // v = grad L_Q(theta_n).
  VecView<const T> theta_n = ws.iterates[n_inner - 1];
  info.query_loss = flow_q.grad_at(theta_n, task.xq, task.cq, ws.v);
  if (second_order) {
    // Backwards through the inner steps: d theta_{k+1} / d theta_k = I - alpha * H_S(theta_k).
    for (int64_t k = n_inner - 1; k >= 0; --k) {
      VecView<const T> theta_k = k == 0 ? theta0 : VecView<const T>(ws.iterates[k - 1]);
      // Only H*v is needed: the gradient at theta_k was formed by the inner step already, so
      // the HVP skips it (an empty grad).
      if (k == n_inner - 1)
        flow_s.hvp(theta_k, task.xs, task.cs, ws.v, {}, ws.hv);  // cache is at theta_k
      else
        flow_s.hvp_at(theta_k, task.xs, task.cs, ws.v, {}, ws.hv);
      vec::axpy<T>(P, -alpha, ws.hv.data(), ws.v.data(), dev, s);
    }
  }
  mem::copy(meta_grad.data, dev, ws.v.data(), dev, sizeof(T) * P, s);
  return info;
}

template struct MamlWorkspace<float>;
template struct MamlWorkspace<double>;
template MetaGradientInfo meta_gradient<float>(CouplingFlow<float>&, CouplingFlow<float>&,
                                               VecView<const float>, const TaskData<float>&,
                                               int64_t, float, bool, VecView<float>,
                                               MamlWorkspace<float>&);
template MetaGradientInfo meta_gradient<double>(CouplingFlow<double>&, CouplingFlow<double>&,
                                                VecView<const double>, const TaskData<double>&,
                                                int64_t, double, bool, VecView<double>,
                                                MamlWorkspace<double>&);
template void inner_adapt<float>(CouplingFlow<float>&, VecView<const float>,
                                 MatrixView<const float>, MatrixView<const float>, int64_t, float,
                                 VecView<float>, MamlWorkspace<float>&);
template void inner_adapt<double>(CouplingFlow<double>&, VecView<const double>,
                                  MatrixView<const double>, MatrixView<const double>, int64_t,
                                  double, VecView<double>, MamlWorkspace<double>&);

}  // namespace mirad
