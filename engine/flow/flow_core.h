// The coupling-flow algorithm written once over a backend's primitives (CpuFlowOps<T> or
// CudaFlowOps): forward with NLL, inverse, reverse-mode gradients, and the exact Hessian-vector
// product by forward-over-reverse (Pearlmutter's R-operator). Shapes are validated by the
// CouplingFlow facade (engine/flow/flow.h); this file assumes them.
//
// Per block, in the block's permuted coordinates xp = x[:, perm] = [x1 | x2]:
//   a1 = x1 W1a^T + c W1c^T + b1,  r = relu(a1),  o = r W2^T + b2 = [u | t]
//   s = clamp*tanh(u/clamp),  y = [x1 | x2*exp(s) + t],  log_det += sum(s)
// then ActNorm z = y*exp(ls) + b, and NLL = 0.5|z|^2 - log_det - sum(ls) + D/2 log(2 pi).
//
// Batched tasks (MAML's meta-batch): with set_tasks(B), params hold B parameter vectors of P
// values one after another, the N rows are B tasks of N/B rows each, and task b's rows meet
// only task b's parameters. Gradients and HVPs are those of each task's own mean NLL. Every
// GEMM is one strided-batched call for all tasks, and bias broadcasts and bias gradients are
// one launch each; ActNorm and the NLL, once per pass, run task by task.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "core/buffer.h"
#include "engine/flow/flow_config.h"

namespace mirad {

template <class Ops>
class FlowCore {
 public:
  using T = typename Ops::Scalar;

  // perm/inv_perm: n_blocks arrays of D indices each, concatenated, on Ops::device.
  FlowCore(const FlowConfig& cfg, Ops& ops, const int32_t* perm, const int32_t* inv_perm)
      : m_cfg(cfg), m_layout(cfg), m_ops(ops), m_perm(perm), m_inv_perm(inv_perm),
        m_P(m_layout.n_params) {}

  // B parameter vectors and B equal row blocks per call (see the top of this file). The
  // caller guarantees that N is a multiple of B.
  void set_tasks(int64_t B) {
    m_B = B;
    m_adjoints_valid = false;
  }

  // Keep backward()'s adjoints (dL/dy at each block's entry and each subnet's g_a) so that an
  // hvp() at the same parameters and data reuses them instead of recomputing the plain reverse
  // pass: two GEMMs per block fewer. MAML's backward sweep is that case: its first HVP is at
  // the support batch and parameters of the inner step's last gradient.
  void set_keep_adjoints(bool on) {
    m_keep_adjoints = on;
    m_adjoints_valid = false;
  }
  int64_t tasks() const { return m_B; }

  // z (N x D) and per-sample nll (N). Caches the activations backward() and hvp() reuse, so
  // they must be called with the same params, x and c as the last forward().
  void forward(const T* params, const T* x, const T* c, int64_t N, T* z, T* nll) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2(), K = m_cfg.n_blocks;
    ensure_workspace(N);
    m_adjoints_valid = false;
    m_N = N;
    m_n = N / m_B;
    m_log_det.zero(m_ops.stream);
    const T* cur = x;
    for (int64_t k = 0; k < K; ++k) {
      const BlockOffsets& bo = m_layout.blocks[k];
      T* xp = m_xp.data() + k * N * D;
      m_ops.gather_cols(N, D, m_perm + k * D, cur, D, xp, D);
      subnet_forward(params, bo, xp, c, N, act(m_a1, k), act(m_r, k), m_o.data());
      // y = [x1 | y2]: copy the pass-through half with the rest, then overwrite y2.
      T* y = (k == K - 1) ? m_y_last.data() : m_y_tmp[k % 2].data();
      mem::copy(y, Ops::device, xp, Ops::device, sizeof(T) * N * D, m_ops.stream);
      m_ops.coupling_forward(N, d2, T(m_cfg.clamp), m_o.data(), xp + d1, D, y + d1, D,
                             m_s.data() + k * N * d2, m_log_det.data());
      cur = y;
    }
    for (int64_t t = 0; t < m_B; ++t) {
      const T* ls = params + t * m_P + m_layout.log_scale;
      const int64_t r0 = t * m_n;
      m_ops.actnorm_forward(m_n, D, ls, params + t * m_P + m_layout.bias,
                            m_y_last.data() + r0 * D, m_z.data() + r0 * D);
      m_ops.nll_rows(m_n, D, m_z.data() + r0 * D, m_log_det.data() + r0, ls, nll + r0);
    }
    if (z) mem::copy(z, Ops::device, m_z.data(), Ops::device, sizeof(T) * N * D, m_ops.stream);
  }

  // x from z, block by block in reverse; the subnet only ever sees x1, which y passes through.
  // Reuses the forward cache as scratch, so a later backward() needs a fresh forward().
  void inverse(const T* params, const T* z, const T* c, int64_t N, T* x) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2();
    ensure_workspace(N);
    m_adjoints_valid = false;
    m_n = N / m_B;
    T* y = m_y_tmp[0].data();
    T* xp = m_y_tmp[1].data();
    for (int64_t t = 0; t < m_B; ++t)
      m_ops.actnorm_inverse(m_n, D, params + t * m_P + m_layout.log_scale,
                            params + t * m_P + m_layout.bias, z + t * m_n * D, y + t * m_n * D);
    for (int64_t k = m_cfg.n_blocks - 1; k >= 0; --k) {
      const BlockOffsets& bo = m_layout.blocks[k];
      subnet_forward(params, bo, y, c, N, act(m_a1, 0), act(m_r, 0), m_o.data());
      mem::copy(xp, Ops::device, y, Ops::device, sizeof(T) * N * D, m_ops.stream);
      m_ops.coupling_inverse(N, d2, T(m_cfg.clamp), m_o.data(), y + d1, D, xp + d1, D);
      // Undo the permutation: x[:, perm[i]] = xp[:, i], i.e. gather with the inverse.
      T* dst = (k == 0) ? x : y;
      m_ops.gather_cols(N, D, m_inv_perm + k * D, xp, D, dst, D);
    }
  }

  // Gradient of mean NLL w.r.t. every parameter (overwrites g_params) and, if g_x is not
  // null, w.r.t. the input x.
  void backward(const T* params, const T* c, T* g_params, T* g_x) {
    const int64_t N = m_N, D = m_cfg.dim;
    const T inv_n = T(1) / T(m_n);
    T* g = m_g.data();
    for (int64_t t = 0; t < m_B; ++t) {
      const int64_t r0 = t * m_n, p0 = t * m_P;
      m_ops.actnorm_backward(m_n, D, inv_n, params + p0 + m_layout.log_scale,
                             params + p0 + m_layout.bias, m_z.data() + r0 * D, g + r0 * D,
                             g_params + p0 + m_layout.log_scale, g_params + p0 + m_layout.bias);
    }
    const bool keep = m_keep_adjoints;
    if (keep) ensure_adjoint_workspace(N);
    for (int64_t k = m_cfg.n_blocks - 1; k >= 0; --k) {
      if (keep) mem::copy(adj_g(k), Ops::device, g, Ops::device, sizeof(T) * N * D, m_ops.stream);
      block_backward(params, c, k, g, g_params, nullptr, nullptr, nullptr,
                     keep ? adj_ga(k) : nullptr, nullptr);
      T* dst = (k == 0 && g_x) ? g_x : m_g_tmp.data();
      m_ops.gather_cols(N, D, m_inv_perm + k * D, g, D, dst, D);
      if (dst != g_x) std::swap(m_g, m_g_tmp), g = m_g.data();
    }
    m_adjoints_valid = keep;
  }

  // Exact H*v of mean NLL w.r.t. the parameters (v has the parameter layout), together with the
  // gradient, by propagating tangents along v through the forward pass and then through the
  // reverse pass. Uses the activations cached by the last forward(). g_params may be null:
  // the parameter gradient is then not formed (MAML's backward sweep only needs H*v), which
  // saves a third of the reverse pass's GEMMs.
  void hvp(const T* params, const T* c, const T* v, T* g_params, T* hv) {
    const int64_t N = m_N, D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2();
    const int64_t K = m_cfg.n_blocks;
    ensure_tangent_workspace(N);
    // Tangent forward. The input x does not depend on the parameters, so block 0 sees x_dot = 0.
    T* x_dot_in = nullptr;
    for (int64_t k = 0; k < K; ++k) {
      const BlockOffsets& bo = m_layout.blocks[k];
      T* xp = m_xp.data() + k * N * D;
      T* xp_dot = m_xp_dot.data() + k * N * D;
      if (k == 0)
        mem::zero(xp_dot, Ops::device, sizeof(T) * N * D, m_ops.stream);
      else
        m_ops.gather_cols(N, D, m_perm + k * D, x_dot_in, D, xp_dot, D);
      subnet_tangent(params, v, bo, xp, xp_dot, c, N, k, k > 0);
      T* y_dot = m_y_dot[k % 2].data();
      mem::copy(y_dot, Ops::device, xp_dot, Ops::device, sizeof(T) * N * D, m_ops.stream);
      m_ops.coupling_tangent(N, d2, T(m_cfg.clamp), xp + d1, D, m_s.data() + k * N * d2,
                             xp_dot + d1, D, m_o_dot.data(), y_dot + d1, D,
                             m_s_dot.data() + k * N * d2);
      x_dot_in = y_dot;
    }
    T* z_dot = m_z_dot.data();
    // Reverse pass carrying (g, g_dot) together.
    const T inv_n = T(1) / T(m_n);
    T* g = m_g.data();
    T* g_dot = m_g_dot.data();
    for (int64_t t = 0; t < m_B; ++t) {
      const int64_t r0 = t * m_n * D, p0 = t * m_P;
      const T* ls = params + p0 + m_layout.log_scale;
      const T* vt = v + p0;
      m_ops.actnorm_tangent(m_n, D, ls, vt + m_layout.log_scale, vt + m_layout.bias,
                            m_y_last.data() + r0, x_dot_in + r0, z_dot + r0);
      // Without g_params the ActNorm gradient still has to go somewhere: scratch.
      T* g_ls = g_params ? g_params + p0 + m_layout.log_scale : m_actnorm_scratch.data();
      T* g_b = g_params ? g_params + p0 + m_layout.bias : m_actnorm_scratch.data() + D;
      m_ops.actnorm_backward_hvp(m_n, D, inv_n, ls, params + p0 + m_layout.bias,
                                 vt + m_layout.log_scale, vt + m_layout.bias, m_z.data() + r0,
                                 z_dot + r0, g + r0, g_dot + r0, g_ls, g_b,
                                 hv + p0 + m_layout.log_scale, hv + p0 + m_layout.bias);
    }
    // With backward()'s adjoints kept, each block starts from its cached dL/dy and g_a, and
    // the plain adjoint need not be carried from block to block.
    const bool reuse = m_adjoints_valid;
    for (int64_t k = K - 1; k >= 0; --k) {
      if (reuse) mem::copy(g, Ops::device, adj_g(k), Ops::device, sizeof(T) * N * D, m_ops.stream);
      block_backward(params, c, k, g, g_params, v, g_dot, hv, nullptr, reuse ? adj_ga(k) : nullptr);
      if (!reuse) {
        m_ops.gather_cols(N, D, m_inv_perm + k * D, g, D, m_g_tmp.data(), D);
        std::swap(m_g, m_g_tmp), g = m_g.data();
      }
      m_ops.gather_cols(N, D, m_inv_perm + k * D, g_dot, D, m_g_dot_tmp.data(), D);
      std::swap(m_g_dot, m_g_dot_tmp), g_dot = m_g_dot.data();
    }
  }

  // Output of the last block before ActNorm (for data-dependent ActNorm initialisation).
  const T* last_block_output() const { return m_y_last.data(); }
  const FlowLayout& layout() const { return m_layout; }

 private:
  T* act(Buffer<T>& b, int64_t k) { return b.data() + k * m_N * m_cfg.hidden_width(); }
  T* adj_g(int64_t k) { return m_adj_g.data() + k * m_N * m_cfg.dim; }
  T* adj_ga(int64_t k) { return m_adj_ga.data() + k * m_N * m_cfg.hidden_width(); }

  // a1 = x1 W1a^T + c W1c^T + b1, r = relu(a1), o = r W2^T + b2; x1 is xp's first d1 columns.
  void subnet_forward(const T* params, const BlockOffsets& bo, const T* xp, const T* c,
                      int64_t N, T* a1, T* r, T* o) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2(), H = m_cfg.hidden_width();
    const int64_t C = m_cfg.cond_dim, ldw1 = d1 + C;
    const int64_t n = m_n;
    bias_rows(params + bo.b1, a1, H);
    gemm(false, true, n, H, d1, T(1), rows(xp, D), par(params + bo.w1, ldw1), T(1), rows_out(a1, H));
    if (C > 0)
      gemm(false, true, n, H, C, T(1), rows(c, C), par(params + bo.w1 + d1, ldw1), T(1),
           rows_out(a1, H));
    m_ops.relu(N * H, a1, r);
    bias_rows(params + bo.b2, o, 2 * d2);
    gemm(false, true, n, 2 * d2, H, T(1), rows(r, H), par(params + bo.w2, H), T(1),
         rows_out(o, 2 * d2));
  }

  // Tangent of subnet_forward along v: r_dot (cached per block) and o_dot (m_o_dot).
  void subnet_tangent(const T* params, const T* v, const BlockOffsets& bo, const T* xp,
                      const T* xp_dot, const T* c, int64_t N, int64_t k, bool x_moves) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2(), H = m_cfg.hidden_width();
    const int64_t C = m_cfg.cond_dim, ldw1 = d1 + C;
    T* a_dot = m_a_dot.data();
    T* r_dot = m_r_dot.data() + k * N * H;
    T* o_dot = m_o_dot.data();
    const int64_t n = m_n;
    bias_rows(v + bo.b1, a_dot, H);
    if (x_moves)
      gemm(false, true, n, H, d1, T(1), rows(xp_dot, D), par(params + bo.w1, ldw1), T(1),
           rows_out(a_dot, H));
    gemm(false, true, n, H, d1, T(1), rows(xp, D), par(v + bo.w1, ldw1), T(1), rows_out(a_dot, H));
    if (C > 0)
      gemm(false, true, n, H, C, T(1), rows(c, C), par(v + bo.w1 + d1, ldw1), T(1),
           rows_out(a_dot, H));
    m_ops.relu_mask(N * H, m_a1.data() + k * N * H, a_dot, r_dot);
    bias_rows(v + bo.b2, o_dot, 2 * d2);
    gemm(false, true, n, 2 * d2, H, T(1), rows(r_dot, H), par(params + bo.w2, H), T(1),
         rows_out(o_dot, 2 * d2));
    gemm(false, true, n, 2 * d2, H, T(1), rows(m_r.data() + k * N * H, H), par(v + bo.w2, H),
         T(1), rows_out(o_dot, 2 * d2));
  }

  // Reverse pass through block k. On entry g holds dL/dy (block coordinates); on exit dL/dxp.
  // With v != null it also carries g_dot = R{g} and writes H*v for the block's parameters.
  // g_a_out: where to leave the subnet's g_a (null: scratch). g_a_in: g_a already known (kept
  // by backward()); its GEMM is skipped, and so is dL/dx1's, since the caller has that too, so
  // g is not complete on exit.
  void block_backward(const T* params, const T* c, int64_t k, T* g, T* g_params, const T* v,
                      T* g_dot, T* hv, T* g_a_out, const T* g_a_in) {
    const int64_t N = m_N, D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2();
    const int64_t H = m_cfg.hidden_width(), C = m_cfg.cond_dim, ldw1 = d1 + C, d2x2 = 2 * d2;
    const BlockOffsets& bo = m_layout.blocks[k];
    const int64_t n = m_n;
    const T inv_n = T(1) / T(n);
    const T* xp = m_xp.data() + k * N * D;
    const T* s = m_s.data() + k * N * d2;
    const T* a1 = m_a1.data() + k * N * H;
    const T* r = m_r.data() + k * N * H;
    T* g_o = m_g_o.data();
    const bool second = v != nullptr;
    if (!second) {
      m_ops.coupling_backward(N, d2, T(m_cfg.clamp), inv_n, xp + d1, D, s, g + d1, D, g_o);
    } else {
      m_ops.coupling_backward_hvp(N, d2, T(m_cfg.clamp), inv_n, xp + d1, D, s,
                                  m_xp_dot.data() + k * N * D + d1, D,
                                  m_s_dot.data() + k * N * d2, g + d1, g_dot + d1, D, g_o,
                                  m_g_o_dot.data());
    }
    // W2, b2: dL/dW2 = g_o^T r.
    if (g_params) {
      gemm(true, false, d2x2, H, n, T(1), rows(g_o, d2x2), rows(r, H), T(0),
           par_out(g_params + bo.w2, H));
      task_col_sum(d2x2, g_o, d2x2, T(0), g_params + bo.b2);
    }
    // Through W2 and the ReLU: g_a = (g_o W2) * [a1 > 0].
    const T* g_a = g_a_in;
    if (!g_a_in) {
      T* out = g_a_out ? g_a_out : m_g_a.data();
      gemm(false, false, n, H, d2x2, T(1), rows(g_o, d2x2), par(params + bo.w2, H), T(0),
           rows_out(out, H));
      m_ops.relu_mask(N * H, a1, out, out);
      g_a = out;
    }
    if (second) {
      const T* r_dot = m_r_dot.data() + k * N * H;
      const T* g_o_dot = m_g_o_dot.data();
      T* g_a_dot = m_g_a_dot.data();
      // R{dL/dW2} = g_o_dot^T r + g_o^T r_dot.
      gemm(true, false, d2x2, H, n, T(1), rows(g_o_dot, d2x2), rows(r, H), T(0),
           par_out(hv + bo.w2, H));
      gemm(true, false, d2x2, H, n, T(1), rows(g_o, d2x2), rows(r_dot, H), T(1),
           par_out(hv + bo.w2, H));
      task_col_sum(d2x2, g_o_dot, d2x2, T(0), hv + bo.b2);
      // R{g_a} = (g_o_dot W2 + g_o W2_dot) * [a1 > 0]; ReLU has no curvature almost everywhere.
      gemm(false, false, n, H, d2x2, T(1), rows(g_o_dot, d2x2), par(params + bo.w2, H), T(0),
           rows_out(g_a_dot, H));
      gemm(false, false, n, H, d2x2, T(1), rows(g_o, d2x2), par(v + bo.w2, H), T(1),
           rows_out(g_a_dot, H));
      m_ops.relu_mask(N * H, a1, g_a_dot, g_a_dot);
      // R{dL/dW1} = g_a_dot^T [x1, c] + g_a^T [x1_dot, 0].
      const T* xp_dot = m_xp_dot.data() + k * N * D;
      gemm(true, false, H, d1, n, T(1), rows(g_a_dot, H), rows(xp, D), T(0),
           par_out(hv + bo.w1, ldw1));
      if (k > 0)
        gemm(true, false, H, d1, n, T(1), rows(g_a, H), rows(xp_dot, D), T(1),
             par_out(hv + bo.w1, ldw1));
      if (C > 0)
        gemm(true, false, H, C, n, T(1), rows(g_a_dot, H), rows(c, C), T(0),
             par_out(hv + bo.w1 + d1, ldw1));
      task_col_sum(H, g_a_dot, H, T(0), hv + bo.b1);
      // R{dL/dx1} += g_a_dot W1a + g_a W1a_dot.
      gemm(false, false, n, d1, H, T(1), rows(g_a_dot, H), par(params + bo.w1, ldw1), T(1),
           rows_out(g_dot, D));
      gemm(false, false, n, d1, H, T(1), rows(g_a, H), par(v + bo.w1, ldw1), T(1),
           rows_out(g_dot, D));
    }
    // W1, b1: dL/dW1 = g_a^T [x1, c].
    if (g_params) {
      gemm(true, false, H, d1, n, T(1), rows(g_a, H), rows(xp, D), T(0),
           par_out(g_params + bo.w1, ldw1));
      if (C > 0)
        gemm(true, false, H, C, n, T(1), rows(g_a, H), rows(c, C), T(0),
             par_out(g_params + bo.w1 + d1, ldw1));
      task_col_sum(H, g_a, H, T(0), g_params + bo.b1);
    }
    // x1 feeds both y1 (identity) and the subnet: dL/dx1 = dL/dy1 + g_a W1a.
    if (!g_a_in)
      gemm(false, false, n, d1, H, T(1), rows(g_a, H), par(params + bo.w1, ldw1), T(1),
           rows_out(g, D));
  }

  // One operand of a per-task GEMM: task b's block starts at p + b*stride. Row blocks advance
  // by the task's rows, parameter blocks by P.
  template <typename Ptr>
  struct Operand {
    Ptr p;
    int64_t ld, stride;
  };
  Operand<const T*> rows(const T* p, int64_t ld) const { return {p, ld, m_n * ld}; }
  Operand<const T*> par(const T* p, int64_t ld) const { return {p, ld, m_P}; }
  Operand<T*> rows_out(T* p, int64_t ld) const { return {p, ld, m_n * ld}; }
  Operand<T*> par_out(T* p, int64_t ld) const { return {p, ld, m_P}; }

  // C = alpha*op(A)*op(B) + beta*C for every task; M, N, K are one task's extents. One task
  // takes the plain GEMM, so the unbatched flow is exactly what it was.
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, Operand<const T*> A,
            Operand<const T*> B, T beta, Operand<T*> C) {
    if (m_B == 1)
      m_ops.gemm(ta, tb, M, N, K, alpha, A.p, A.ld, B.p, B.ld, beta, C.p, C.ld);
    else
      m_ops.gemm_batched(ta, tb, M, N, K, alpha, A.p, A.ld, A.stride, B.p, B.ld, B.stride, beta,
                         C.p, C.ld, C.stride, m_B);
  }
  // Every row of task b gets task b's bias (b + b*P).
  void bias_rows(const T* b, T* dst, int64_t W) {
    if (m_B == 1)
      m_ops.broadcast_rows(m_n, W, b, dst, W);
    else
      m_ops.broadcast_rows_batched(m_B, m_n, W, b, m_P, dst, W);
  }
  // Bias gradient of each task: the column sums of its rows into dst + b*P.
  void task_col_sum(int64_t W, const T* src, int64_t lds, T beta, T* dst) {
    if (m_B == 1)
      m_ops.col_sum(m_n, W, src, lds, beta, dst);
    else
      m_ops.col_sum_batched(m_B, m_n, W, src, lds, beta, dst, m_P);
  }

  void ensure_workspace(int64_t N) {
    if (N <= m_N_cap) {
      m_N = N;
      return;
    }
    const int64_t D = m_cfg.dim, d2 = m_cfg.d2(), H = m_cfg.hidden_width(), K = m_cfg.n_blocks;
    const Device dev = Ops::device;
    m_xp = Buffer<T>(K * N * D, dev);
    m_a1 = Buffer<T>(K * N * H, dev);
    m_r = Buffer<T>(K * N * H, dev);
    m_s = Buffer<T>(K * N * d2, dev);
    m_o = Buffer<T>(N * 2 * d2, dev);
    m_y_tmp[0] = Buffer<T>(N * D, dev);
    m_y_tmp[1] = Buffer<T>(N * D, dev);
    m_y_last = Buffer<T>(N * D, dev);
    m_z = Buffer<T>(N * D, dev);
    m_log_det = Buffer<T>(N, dev);
    m_g = Buffer<T>(N * D, dev);
    m_g_tmp = Buffer<T>(N * D, dev);
    m_g_o = Buffer<T>(N * 2 * d2, dev);
    m_g_a = Buffer<T>(N * H, dev);
    m_N_cap = N;
    m_N = N;
    m_tangent_cap = 0;
    m_adjoint_cap = 0;
  }

  // Kept adjoints: only flows with set_keep_adjoints(true) pay for them.
  void ensure_adjoint_workspace(int64_t N) {
    if (N <= m_adjoint_cap) return;
    const int64_t D = m_cfg.dim, H = m_cfg.hidden_width(), K = m_cfg.n_blocks;
    m_adj_g = Buffer<T>(K * N * D, Ops::device);
    m_adj_ga = Buffer<T>(K * N * H, Ops::device);
    m_adjoint_cap = N;
  }

  // Tangent buffers double the activation memory, so only HVP callers pay for them.
  void ensure_tangent_workspace(int64_t N) {
    if (N <= m_tangent_cap) return;
    const int64_t D = m_cfg.dim, d2 = m_cfg.d2(), H = m_cfg.hidden_width(), K = m_cfg.n_blocks;
    const Device dev = Ops::device;
    m_xp_dot = Buffer<T>(K * N * D, dev);
    m_r_dot = Buffer<T>(K * N * H, dev);
    m_s_dot = Buffer<T>(K * N * d2, dev);
    m_a_dot = Buffer<T>(N * H, dev);
    m_o_dot = Buffer<T>(N * 2 * d2, dev);
    m_y_dot[0] = Buffer<T>(N * D, dev);
    m_y_dot[1] = Buffer<T>(N * D, dev);
    m_z_dot = Buffer<T>(N * D, dev);
    m_g_dot = Buffer<T>(N * D, dev);
    m_g_dot_tmp = Buffer<T>(N * D, dev);
    m_g_o_dot = Buffer<T>(N * 2 * d2, dev);
    m_g_a_dot = Buffer<T>(N * H, dev);
    m_actnorm_scratch = Buffer<T>(2 * D, dev);
    m_tangent_cap = N;
  }

  FlowConfig m_cfg;
  FlowLayout m_layout;
  Ops& m_ops;
  const int32_t* m_perm;
  const int32_t* m_inv_perm;
  int64_t m_P;      // parameters per task
  int64_t m_B = 1;  // tasks per call
  int64_t m_N = 0, m_N_cap = 0, m_tangent_cap = 0, m_adjoint_cap = 0;
  bool m_keep_adjoints = false, m_adjoints_valid = false;
  int64_t m_n = 0;  // rows per task: m_N / m_B
  // Forward cache (per block where indexed by k) and reverse-pass scratch.
  Buffer<T> m_xp, m_a1, m_r, m_s, m_o, m_y_tmp[2], m_y_last, m_z, m_log_det;
  Buffer<T> m_g, m_g_tmp, m_g_o, m_g_a;
  // Tangent (R-operator) cache and scratch.
  Buffer<T> m_xp_dot, m_r_dot, m_s_dot, m_a_dot, m_o_dot, m_y_dot[2], m_z_dot;
  Buffer<T> m_g_dot, m_g_dot_tmp, m_g_o_dot, m_g_a_dot, m_actnorm_scratch;
  // Adjoints kept by backward() for hvp() (set_keep_adjoints).
  Buffer<T> m_adj_g, m_adj_ga;
};

}  // namespace mirad
