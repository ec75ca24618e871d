// CPU reference of every primitive the coupling flow is built from (float and double).
// Plain loops over rows, OpenBLAS for GEMM. kernels/flow_ops_cuda.h mirrors this interface
// method for method; tests/test_cuda_flow_ops.cpp compares the two.
#pragma once

#include <cblas.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "core/device.h"
#include "kernels/coupling_math.h"
#include "kernels/vec_math.h"

namespace mirad {

// GEMM work done by CpuFlowOps, in floating-point operations (2*M*N*K per call), for the
// benchmarks' fraction-of-peak figures; one relaxed atomic add per GEMM call.
inline std::atomic<uint64_t>& cpu_gemm_flops() {
  static std::atomic<uint64_t> flops{0};
  return flops;
}

template <typename T>
struct CpuFlowOps {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>);
  using Scalar = T;
  static constexpr Device device = Device::cpu;
  Stream stream{};

  // Row-major C[M,N] = alpha*op(A)*op(B) + beta*C, op(A) is M x K and op(B) is K x N.
  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
            int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) const {
    if (M == 0 || N == 0) return;
    cpu_gemm_flops().fetch_add(uint64_t(2 * M * N * K), std::memory_order_relaxed);
    auto ta = trans_a ? CblasTrans : CblasNoTrans;
    auto tb = trans_b ? CblasTrans : CblasNoTrans;
    if constexpr (std::is_same_v<T, float>)
      cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    else
      cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  // B independent GEMMs, operand b at A + b*sa, B + b*sb, C + b*sc (one task's rows or
  // parameters each): the batched-task flow's GEMMs. Task by task, so each task's result is
  // bit-identical to gemm() on its own operands.
  void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                    const T* A, int64_t lda, int64_t sa, const T* B, int64_t ldb, int64_t sb,
                    T beta, T* C, int64_t ldc, int64_t sc, int64_t batch) const {
    for (int64_t b = 0; b < batch; ++b)
      gemm(trans_a, trans_b, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta, C + b * sc,
           ldc);
  }

  // dst[n, i] = src[n, idx[i]] for i < n_out: applies the fixed permutation of a block.
  void gather_cols(int64_t N, int64_t n_out, const int32_t* idx, const T* src, int64_t lds,
                   T* dst, int64_t ldd) const {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < n_out; ++i) dst[n * ldd + i] = src[n * lds + idx[i]];
  }

  // dst[n, :] = b: seeds a GEMM output with its bias so the GEMM can accumulate (beta = 1).
  void broadcast_rows(int64_t N, int64_t W, const T* b, T* dst, int64_t ldd) const {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < W; ++j) dst[n * ldd + j] = b[j];
  }

  // broadcast_rows per task: rows [b*n, (b+1)*n) get task b's bias, b + task*sb.
  void broadcast_rows_batched(int64_t batch, int64_t n, int64_t W, const T* b, int64_t sb, T* dst,
                              int64_t ldd) const {
    for (int64_t t = 0; t < batch; ++t) broadcast_rows(n, W, b + t * sb, dst + t * n * ldd, ldd);
  }

  void relu(int64_t n, const T* a, T* r) const {
    for (int64_t i = 0; i < n; ++i) r[i] = a[i] > T(0) ? a[i] : T(0);
  }

  // out = in where a > 0, else 0: ReLU's Jacobian, used for gradients and tangents alike.
  void relu_mask(int64_t n, const T* a, const T* in, T* out) const {
    for (int64_t i = 0; i < n; ++i) out[i] = a[i] > T(0) ? in[i] : T(0);
  }

  // dst[j] = beta*dst[j] + sum_n src[n, j]: bias gradients.
  void col_sum(int64_t N, int64_t W, const T* src, int64_t lds, T beta, T* dst) const {
    for (int64_t j = 0; j < W; ++j) dst[j] = beta == T(0) ? T(0) : beta * dst[j];
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < W; ++j) dst[j] += src[n * lds + j];
  }

  // col_sum per task: dst + b*sd = beta*dst + sum over task b's n rows of src.
  void col_sum_batched(int64_t batch, int64_t n, int64_t W, const T* src, int64_t lds, T beta,
                       T* dst, int64_t sd) const {
    for (int64_t t = 0; t < batch; ++t) col_sum(n, W, src + t * n * lds, lds, beta, dst + t * sd);
  }

  // o = [u | t] (N x 2*d2): s = clamp(u), y2 = x2*exp(s) + t, log_det[n] += sum_j s.
  void coupling_forward(int64_t N, int64_t d2, T clamp, const T* o, const T* x2, int64_t ldx,
                        T* y2, int64_t ldy, T* s, T* log_det) const {
    T* e = scratch(d2);
    for (int64_t n = 0; n < N; ++n) {
      const T* u = o + n * 2 * d2;
      const T* t = u + d2;
      T* sn = s + n * d2;
      vec::soft_clamp(u, clamp, sn, d2);
      vec::exp(sn, e, d2);
      T acc = 0;
      for (int64_t j = 0; j < d2; ++j) {
        y2[n * ldy + j] = math::coupling_y_e(x2[n * ldx + j], e[j], t[j]);
        acc += sn[j];
      }
      log_det[n] += acc;
    }
  }

  void coupling_inverse(int64_t N, int64_t d2, T clamp, const T* o, const T* y2, int64_t ldy,
                        T* x2, int64_t ldx) const {
    T* e = scratch(d2);
    for (int64_t n = 0; n < N; ++n) {
      const T* u = o + n * 2 * d2;
      const T* t = u + d2;
      vec::soft_clamp(u, clamp, e, d2);
      for (int64_t j = 0; j < d2; ++j) e[j] = -e[j];
      vec::exp(e, e, d2);  // exp(-s)
      for (int64_t j = 0; j < d2; ++j)
        x2[n * ldx + j] = math::coupling_x_e(y2[n * ldy + j], e[j], t[j]);
    }
  }

  // g2 (N x d2, stride ldg) holds dL/dy2 on entry and dL/dx2 on exit; g_o = [dL/du | dL/dt].
  void coupling_backward(int64_t N, int64_t d2, T clamp, T inv_n, const T* x2, int64_t ldx,
                         const T* s, T* g2, int64_t ldg, T* g_o) const {
    T* e = scratch(d2);
    for (int64_t n = 0; n < N; ++n) {
      vec::exp(s + n * d2, e, d2);
      for (int64_t j = 0; j < d2; ++j) {
        auto g = math::coupling_grad_e(g2[n * ldg + j], x2[n * ldx + j], s[n * d2 + j], e[j],
                                       clamp, inv_n);
        g_o[n * 2 * d2 + j] = g.g_u;
        g_o[n * 2 * d2 + d2 + j] = g.g_t;
        g2[n * ldg + j] = g.g_x2;
      }
    }
  }

  // Tangent of coupling_forward: o_dot = [u_dot | t_dot] -> s_dot (N x d2) and y2_dot.
  void coupling_tangent(int64_t N, int64_t d2, T clamp, const T* x2, int64_t ldx, const T* s,
                        const T* x2_dot, int64_t ldxd, const T* o_dot, T* y2_dot, int64_t ldyd,
                        T* s_dot) const {
    T* e = scratch(d2);
    for (int64_t n = 0; n < N; ++n) {
      vec::exp(s + n * d2, e, d2);
      for (int64_t j = 0; j < d2; ++j) {
        auto r = math::coupling_tangent_e(x2[n * ldx + j], s[n * d2 + j], e[j], clamp,
                                          o_dot[n * 2 * d2 + j], o_dot[n * 2 * d2 + d2 + j],
                                          x2_dot[n * ldxd + j]);
        s_dot[n * d2 + j] = r.s_dot;
        y2_dot[n * ldyd + j] = r.y2_dot;
      }
    }
  }

  // coupling_backward and its tangent in one pass; g2 and g2_dot are updated in place.
  void coupling_backward_hvp(int64_t N, int64_t d2, T clamp, T inv_n, const T* x2, int64_t ldx,
                             const T* s, const T* x2_dot, int64_t ldxd, const T* s_dot, T* g2,
                             T* g2_dot, int64_t ldg, T* g_o, T* g_o_dot) const {
    T* e = scratch(d2);
    for (int64_t n = 0; n < N; ++n) {
      vec::exp(s + n * d2, e, d2);
      for (int64_t j = 0; j < d2; ++j) {
        auto r = math::coupling_grad_hvp_e(g2[n * ldg + j], g2_dot[n * ldg + j], x2[n * ldx + j],
                                           x2_dot[n * ldxd + j], s[n * d2 + j],
                                           s_dot[n * d2 + j], e[j], clamp, inv_n);
        g_o[n * 2 * d2 + j] = r.g.g_u;
        g_o[n * 2 * d2 + d2 + j] = r.g.g_t;
        g2[n * ldg + j] = r.g.g_x2;
        g_o_dot[n * 2 * d2 + j] = r.g_dot.g_u;
        g_o_dot[n * 2 * d2 + d2 + j] = r.g_dot.g_t;
        g2_dot[n * ldg + j] = r.g_dot.g_x2;
      }
    }
  }

  // ActNorm z = y*exp(ls) + b (all N x D contiguous). exp(ls) once per column, not per element.
  void actnorm_forward(int64_t N, int64_t D, const T* ls, const T* b, const T* y, T* z) const {
    const T* e = column_exp(D, ls, T(1));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < D; ++j) z[n * D + j] = math::actnorm_z_e(y[n * D + j], e[j], b[j]);
  }
  void actnorm_inverse(int64_t N, int64_t D, const T* ls, const T* b, const T* z, T* y) const {
    const T* e = column_exp(D, ls, T(-1));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < D; ++j) y[n * D + j] = math::actnorm_y_e(z[n * D + j], e[j], b[j]);
  }

  // nll[n] = 0.5*|z_n|^2 - log_det[n] - sum_j ls_j + D*0.5*log(2*pi).
  void nll_rows(int64_t N, int64_t D, const T* z, const T* log_det, const T* ls, T* nll) const {
    T sum_ls = 0;
    for (int64_t j = 0; j < D; ++j) sum_ls += ls[j];
    for (int64_t n = 0; n < N; ++n) {
      T sq = 0;
      for (int64_t j = 0; j < D; ++j) sq += z[n * D + j] * z[n * D + j];
      nll[n] = math::nll_from_parts(sq, log_det[n], sum_ls, D);
    }
  }

  // Reverse of ActNorm + NLL for L = mean_n nll: dL/dz = z/N, so
  // g_y = (z/N)*exp(ls), g_ls_j = sum_n (z/N)*(z - b) - 1, g_b_j = sum_n z/N.
  void actnorm_backward(int64_t N, int64_t D, T inv_n, const T* ls, const T* b, const T* z,
                        T* g_y, T* g_ls, T* g_b) const {
    for (int64_t j = 0; j < D; ++j) g_ls[j] = T(-1), g_b[j] = T(0);
    const T* e = column_exp(D, ls, T(1));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < D; ++j) {
        auto g = math::actnorm_grad(z[n * D + j], e[j], b[j], inv_n);
        g_y[n * D + j] = g.g_y;
        g_ls[j] += g.g_ls_term;
        g_b[j] += g.g_b_term;
      }
  }

  // Tangent of ActNorm: z_dot = (y_dot + y*ls_dot)*exp(ls) + b_dot.
  void actnorm_tangent(int64_t N, int64_t D, const T* ls, const T* ls_dot, const T* b_dot,
                       const T* y, const T* y_dot, T* z_dot) const {
    const T* e = column_exp(D, ls, T(1));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < D; ++j)
        z_dot[n * D + j] =
            math::actnorm_z_dot(y[n * D + j], y_dot[n * D + j], e[j], ls_dot[j], b_dot[j]);
  }

  // actnorm_backward and its tangent: also g_y_dot, hv_ls = R{g_ls}, hv_b = R{g_b}.
  void actnorm_backward_hvp(int64_t N, int64_t D, T inv_n, const T* ls, const T* b,
                            const T* ls_dot, const T* b_dot, const T* z, const T* z_dot, T* g_y,
                            T* g_y_dot, T* g_ls, T* g_b, T* hv_ls, T* hv_b) const {
    for (int64_t j = 0; j < D; ++j) g_ls[j] = T(-1), g_b[j] = hv_ls[j] = hv_b[j] = T(0);
    const T* e = column_exp(D, ls, T(1));
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < D; ++j) {
        auto g = math::actnorm_grad_hvp(z[n * D + j], z_dot[n * D + j], e[j], b[j],
                                        ls_dot[j], b_dot[j], inv_n);
        g_y[n * D + j] = g.g_y;
        g_y_dot[n * D + j] = g.g_y_dot;
        g_ls[j] += g.g_ls_term;
        g_b[j] += g.g_b_term;
        hv_ls[j] += g.hv_ls_term;
        hv_b[j] += g.hv_b_term;
      }
  }

  // flags[n] = 1 when row n holds a NaN or Inf.
  void nonfinite_rows(int64_t N, int64_t D, const T* x, int64_t ldx, uint8_t* flags) const {
    for (int64_t n = 0; n < N; ++n) {
      uint8_t bad = 0;
      for (int64_t j = 0; j < D; ++j) bad |= !std::isfinite(x[n * ldx + j]);
      flags[n] = bad;
    }
  }

  void synchronize() const {}

 private:
  // Per-thread scratch of n values (the ops are const and may run on several threads at once,
  // one flow each).
  static T* scratch(int64_t n) {
    thread_local std::vector<T> buf;
    if (int64_t(buf.size()) < n) buf.resize(n);
    return buf.data();
  }
  // exp(sign * ls[j]) per column, with the same scalar exp as the per-element form had.
  static const T* column_exp(int64_t D, const T* ls, T sign) {
    T* e = scratch(D);
    for (int64_t j = 0; j < D; ++j) e[j] = math::exp_(sign * ls[j]);
    return e;
  }

 public:
};

}  // namespace mirad
