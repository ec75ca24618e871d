// The coupling-flow algorithm written once over a backend's primitives (CpuFlowOps<T> or
// CudaFlowOps): forward with NLL, inverse, reverse-mode gradients, and the exact Hessian-vector
// product by forward-over-reverse (Pearlmutter's R-operator). Shapes are validated by the
// CouplingFlow facade (engine/flow.h); this file assumes them.
//
// Per block, in the block's permuted coordinates xp = x[:, perm] = [x1 | x2]:
//   a1 = x1 W1a^T + c W1c^T + b1,  r = relu(a1),  o = r W2^T + b2 = [u | t]
//   s = clamp*tanh(u/clamp),  y = [x1 | x2*exp(s) + t],  log_det += sum(s)
// then ActNorm z = y*exp(ls) + b, and NLL = 0.5|z|^2 - log_det - sum(ls) + D/2 log(2 pi).
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/buffer.h"
#include "engine/flow_config.h"

namespace mirad {

template <class Ops>
class FlowCore {
 public:
  using T = typename Ops::Scalar;

  // perm/inv_perm: n_blocks arrays of D indices each, concatenated, on Ops::device.
  FlowCore(const FlowConfig& cfg, Ops& ops, const int32_t* perm, const int32_t* inv_perm)
      : m_cfg(cfg), m_layout(cfg), m_ops(ops), m_perm(perm), m_inv_perm(inv_perm) {}

  // z (N x D) and per-sample nll (N). Caches the activations backward() and hvp() reuse, so
  // they must be called with the same params, x and c as the last forward().
  void forward(const T* params, const T* x, const T* c, int64_t N, T* z, T* nll) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2(), K = m_cfg.n_blocks;
    ensure_workspace(N);
    m_N = N;
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
    const T* ls = params + m_layout.log_scale;
    m_ops.actnorm_forward(N, D, ls, params + m_layout.bias, m_y_last.data(), m_z.data());
    m_ops.nll_rows(N, D, m_z.data(), m_log_det.data(), ls, nll);
    if (z) mem::copy(z, Ops::device, m_z.data(), Ops::device, sizeof(T) * N * D, m_ops.stream);
  }

  // x from z, block by block in reverse; the subnet only ever sees x1, which y passes through.
  // Reuses the forward cache as scratch, so a later backward() needs a fresh forward().
  void inverse(const T* params, const T* z, const T* c, int64_t N, T* x) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2();
    ensure_workspace(N);
    T* y = m_y_tmp[0].data();
    T* xp = m_y_tmp[1].data();
    m_ops.actnorm_inverse(N, D, params + m_layout.log_scale, params + m_layout.bias, z, y);
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
    const T inv_n = T(1) / T(N);
    T* g = m_g.data();
    m_ops.actnorm_backward(N, D, inv_n, params + m_layout.log_scale, params + m_layout.bias, m_z.data(),
                           g, g_params + m_layout.log_scale, g_params + m_layout.bias);
    for (int64_t k = m_cfg.n_blocks - 1; k >= 0; --k) {
      block_backward(params, c, k, g, g_params, nullptr, nullptr, nullptr);
      T* dst = (k == 0 && g_x) ? g_x : m_g_tmp.data();
      m_ops.gather_cols(N, D, m_inv_perm + k * D, g, D, dst, D);
      if (dst != g_x) std::swap(m_g, m_g_tmp), g = m_g.data();
    }
  }

  // Exact H*v of mean NLL w.r.t. the parameters (v has the parameter layout), together with the
  // gradient, by propagating tangents along v through the forward pass and then through the
  // reverse pass. Uses the activations cached by the last forward().
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
    const T* ls = params + m_layout.log_scale;
    m_ops.actnorm_tangent(N, D, ls, v + m_layout.log_scale, v + m_layout.bias, m_y_last.data(),
                          x_dot_in, z_dot);
    // Reverse pass carrying (g, g_dot) together.
    const T inv_n = T(1) / T(N);
    T* g = m_g.data();
    T* g_dot = m_g_dot.data();
    m_ops.actnorm_backward_hvp(N, D, inv_n, ls, params + m_layout.bias, v + m_layout.log_scale,
                               v + m_layout.bias, m_z.data(), z_dot, g, g_dot,
                               g_params + m_layout.log_scale, g_params + m_layout.bias,
                               hv + m_layout.log_scale, hv + m_layout.bias);
    for (int64_t k = K - 1; k >= 0; --k) {
      block_backward(params, c, k, g, g_params, v, g_dot, hv);
      m_ops.gather_cols(N, D, m_inv_perm + k * D, g, D, m_g_tmp.data(), D);
      m_ops.gather_cols(N, D, m_inv_perm + k * D, g_dot, D, m_g_dot_tmp.data(), D);
      std::swap(m_g, m_g_tmp), g = m_g.data();
      std::swap(m_g_dot, m_g_dot_tmp), g_dot = m_g_dot.data();
    }
  }

  // Output of the last block before ActNorm (for data-dependent ActNorm initialisation).
  const T* last_block_output() const { return m_y_last.data(); }
  const FlowLayout& layout() const { return m_layout; }

 private:
  T* act(Buffer<T>& b, int64_t k) { return b.data() + k * m_N * m_cfg.hidden_width(); }

  // a1 = x1 W1a^T + c W1c^T + b1, r = relu(a1), o = r W2^T + b2; x1 is xp's first d1 columns.
  void subnet_forward(const T* params, const BlockOffsets& bo, const T* xp, const T* c,
                      int64_t N, T* a1, T* r, T* o) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2(), H = m_cfg.hidden_width();
    const int64_t C = m_cfg.cond_dim, ldw1 = d1 + C;
    m_ops.broadcast_rows(N, H, params + bo.b1, a1, H);
    m_ops.gemm(false, true, N, H, d1, T(1), xp, D, params + bo.w1, ldw1, T(1), a1, H);
    if (C > 0)
      m_ops.gemm(false, true, N, H, C, T(1), c, C, params + bo.w1 + d1, ldw1, T(1), a1, H);
    m_ops.relu(N * H, a1, r);
    m_ops.broadcast_rows(N, 2 * d2, params + bo.b2, o, 2 * d2);
    m_ops.gemm(false, true, N, 2 * d2, H, T(1), r, H, params + bo.w2, H, T(1), o, 2 * d2);
  }

  // Tangent of subnet_forward along v: r_dot (cached per block) and o_dot (m_o_dot).
  void subnet_tangent(const T* params, const T* v, const BlockOffsets& bo, const T* xp,
                      const T* xp_dot, const T* c, int64_t N, int64_t k, bool x_moves) {
    const int64_t D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2(), H = m_cfg.hidden_width();
    const int64_t C = m_cfg.cond_dim, ldw1 = d1 + C;
    T* a_dot = m_a_dot.data();
    T* r_dot = m_r_dot.data() + k * N * H;
    T* o_dot = m_o_dot.data();
    m_ops.broadcast_rows(N, H, v + bo.b1, a_dot, H);
    if (x_moves)
      m_ops.gemm(false, true, N, H, d1, T(1), xp_dot, D, params + bo.w1, ldw1, T(1), a_dot, H);
    m_ops.gemm(false, true, N, H, d1, T(1), xp, D, v + bo.w1, ldw1, T(1), a_dot, H);
    if (C > 0) m_ops.gemm(false, true, N, H, C, T(1), c, C, v + bo.w1 + d1, ldw1, T(1), a_dot, H);
    m_ops.relu_mask(N * H, m_a1.data() + k * N * H, a_dot, r_dot);
    m_ops.broadcast_rows(N, 2 * d2, v + bo.b2, o_dot, 2 * d2);
    m_ops.gemm(false, true, N, 2 * d2, H, T(1), r_dot, H, params + bo.w2, H, T(1), o_dot, 2 * d2);
    m_ops.gemm(false, true, N, 2 * d2, H, T(1), m_r.data() + k * N * H, H, v + bo.w2, H,
               T(1), o_dot, 2 * d2);
  }

  // Reverse pass through block k. On entry g holds dL/dy (block coordinates); on exit dL/dxp.
  // With v != null it also carries g_dot = R{g} and writes H*v for the block's parameters.
  void block_backward(const T* params, const T* c, int64_t k, T* g, T* g_params, const T* v,
                      T* g_dot, T* hv) {
    const int64_t N = m_N, D = m_cfg.dim, d1 = m_cfg.d1(), d2 = m_cfg.d2();
    const int64_t H = m_cfg.hidden_width(), C = m_cfg.cond_dim, ldw1 = d1 + C, d2x2 = 2 * d2;
    const BlockOffsets& bo = m_layout.blocks[k];
    const T inv_n = T(1) / T(N);
    const T* xp = m_xp.data() + k * N * D;
    const T* s = m_s.data() + k * N * d2;
    const T* a1 = m_a1.data() + k * N * H;
    const T* r = m_r.data() + k * N * H;
    T* g_o = m_g_o.data();
    T* g_a = m_g_a.data();
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
    m_ops.gemm(true, false, d2x2, H, N, T(1), g_o, d2x2, r, H, T(0), g_params + bo.w2, H);
    m_ops.col_sum(N, d2x2, g_o, d2x2, T(0), g_params + bo.b2);
    // Through W2 and the ReLU: g_a = (g_o W2) * [a1 > 0].
    m_ops.gemm(false, false, N, H, d2x2, T(1), g_o, d2x2, params + bo.w2, H, T(0), g_a, H);
    m_ops.relu_mask(N * H, a1, g_a, g_a);
    if (second) {
      const T* r_dot = m_r_dot.data() + k * N * H;
      const T* g_o_dot = m_g_o_dot.data();
      T* g_a_dot = m_g_a_dot.data();
      // R{dL/dW2} = g_o_dot^T r + g_o^T r_dot.
      m_ops.gemm(true, false, d2x2, H, N, T(1), g_o_dot, d2x2, r, H, T(0), hv + bo.w2, H);
      m_ops.gemm(true, false, d2x2, H, N, T(1), g_o, d2x2, r_dot, H, T(1), hv + bo.w2, H);
      m_ops.col_sum(N, d2x2, g_o_dot, d2x2, T(0), hv + bo.b2);
      // R{g_a} = (g_o_dot W2 + g_o W2_dot) * [a1 > 0]; ReLU has no curvature almost everywhere.
      m_ops.gemm(false, false, N, H, d2x2, T(1), g_o_dot, d2x2, params + bo.w2, H, T(0), g_a_dot,
                 H);
      m_ops.gemm(false, false, N, H, d2x2, T(1), g_o, d2x2, v + bo.w2, H, T(1), g_a_dot, H);
      m_ops.relu_mask(N * H, a1, g_a_dot, g_a_dot);
      // R{dL/dW1} = g_a_dot^T [x1, c] + g_a^T [x1_dot, 0].
      const T* xp_dot = m_xp_dot.data() + k * N * D;
      m_ops.gemm(true, false, H, d1, N, T(1), g_a_dot, H, xp, D, T(0), hv + bo.w1, ldw1);
      if (k > 0)
        m_ops.gemm(true, false, H, d1, N, T(1), g_a, H, xp_dot, D, T(1), hv + bo.w1, ldw1);
      if (C > 0)
        m_ops.gemm(true, false, H, C, N, T(1), g_a_dot, H, c, C, T(0), hv + bo.w1 + d1, ldw1);
      m_ops.col_sum(N, H, g_a_dot, H, T(0), hv + bo.b1);
      // R{dL/dx1} += g_a_dot W1a + g_a W1a_dot.
      m_ops.gemm(false, false, N, d1, H, T(1), g_a_dot, H, params + bo.w1, ldw1, T(1), g_dot, D);
      m_ops.gemm(false, false, N, d1, H, T(1), g_a, H, v + bo.w1, ldw1, T(1), g_dot, D);
    }
    // W1, b1: dL/dW1 = g_a^T [x1, c].
    m_ops.gemm(true, false, H, d1, N, T(1), g_a, H, xp, D, T(0), g_params + bo.w1, ldw1);
    if (C > 0)
      m_ops.gemm(true, false, H, C, N, T(1), g_a, H, c, C, T(0), g_params + bo.w1 + d1, ldw1);
    m_ops.col_sum(N, H, g_a, H, T(0), g_params + bo.b1);
    // x1 feeds both y1 (identity) and the subnet: dL/dx1 = dL/dy1 + g_a W1a.
    m_ops.gemm(false, false, N, d1, H, T(1), g_a, H, params + bo.w1, ldw1, T(1), g, D);
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
    m_tangent_cap = N;
  }

  FlowConfig m_cfg;
  FlowLayout m_layout;
  Ops& m_ops;
  const int32_t* m_perm;
  const int32_t* m_inv_perm;
  int64_t m_N = 0, m_N_cap = 0, m_tangent_cap = 0;
  // Forward cache (per block where indexed by k) and reverse-pass scratch.
  Buffer<T> m_xp, m_a1, m_r, m_s, m_o, m_y_tmp[2], m_y_last, m_z, m_log_det;
  Buffer<T> m_g, m_g_tmp, m_g_o, m_g_a;
  // Tangent (R-operator) cache and scratch.
  Buffer<T> m_xp_dot, m_r_dot, m_s_dot, m_a_dot, m_o_dot, m_y_dot[2], m_z_dot;
  Buffer<T> m_g_dot, m_g_dot_tmp, m_g_o_dot, m_g_a_dot;
};

}  // namespace mirad
