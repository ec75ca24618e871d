// The MAML meta-gradient of one task: F(theta_0) = L_Q(theta_n) with the inner SGD steps
// theta_{k+1} = theta_k - alpha * grad L_S(theta_k). Second order (exact): v = grad L_Q(theta_n),
// then for k = n-1..0: v <- v - alpha * H_S(theta_k) v. First order: v = grad L_Q(theta_n).
// All vector work stays on the flow's device (kernels/vec_ops.h).
#pragma once

#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "engine/flow/flow.h"

namespace mirad {

// One task's data: support and query rows with their conditions, on the flow's device.
template <typename T>
struct TaskData {
  MatrixView<const T> xs, cs, xq, cq;
};

struct MetaGradientInfo {
  double support_loss = 0;  // L_S(theta_0) (NaN when the flows do not read losses back)
  double query_loss = 0;    // L_Q(theta_n)
};

// Scratch of one meta-gradient: the inner iterates theta_1..theta_n and three vectors.
template <typename T>
struct MamlWorkspace {
  std::vector<Buffer<T>> iterates;
  Buffer<T> grad, v, hv;
  void ensure(int64_t n_inner, int64_t n_params, Device device);
};

// Batched tasks: with flows set to B tasks (CouplingFlow::set_tasks), theta0, meta_grad and the
// workspace hold B parameter vectors and the task's rows B blocks: B independent tasks in one
// pass, each with its own theta_0 (the caller broadcasts a shared one).
// Writes dF/dtheta_0 to meta_grad. flow_s and flow_q are two flows of the same config (two
// activation caches, so the support forward at theta_{n-1} survives the query pass and its
// HVP reuses it). meta_grad must not alias theta0.
template <typename T>
MetaGradientInfo meta_gradient(CouplingFlow<T>& flow_s, CouplingFlow<T>& flow_q,
                               VecView<const T> theta0, const TaskData<T>& task, int64_t n_inner,
                               T alpha, bool second_order, VecView<T> meta_grad,
                               MamlWorkspace<T>& ws);

// theta_n = adapt(theta_0): n_inner SGD steps on the support loss (what the meta-gradient
// differentiates), for tests and for scoring with an adapted model.
template <typename T>
void inner_adapt(CouplingFlow<T>& flow_s, VecView<const T> theta0, MatrixView<const T> xs,
                 MatrixView<const T> cs, int64_t n_inner, T alpha, VecView<T> theta_n,
                 MamlWorkspace<T>& ws);

}  // namespace mirad
