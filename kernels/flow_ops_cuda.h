// CUDA implementation of the flow primitives (float32), method for method the interface of
// CpuFlowOps in kernels/flow_ops_cpu.h: same names, same argument meaning, device pointers.
// GEMMs go to cuBLAS; the element-wise, clamp, log-det and HVP parts are custom kernels built
// on kernels/coupling_math.h. Every call is queued on `stream`; nothing synchronises unless
// named so. This header is plain C++ so g++-compiled engine code can instantiate FlowCore on it.
#pragma once

#include <cstdint>
#include <vector>

#include "core/device.h"

namespace mirad {

// One GEMM as CudaFlowOps ran it (row-major extents, leading dimensions, per-task strides).
struct GemmCall {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0, lda = 0, ldb = 0, ldc = 0, sa = 0, sb = 0, sc = 0, batch = 1;
};
// When set, every gemm()/gemm_batched() issued on this thread is appended to the vector: the
// benchmarks replay a training step's GEMMs alone to measure the step's pure GEMM time.
std::vector<GemmCall>*& gemm_recorder();

class CudaFlowOps {
 public:
  using Scalar = float;
  using T = float;
  static constexpr Device device = Device::cuda;

  explicit CudaFlowOps(Stream s = {});
  ~CudaFlowOps();
  CudaFlowOps(const CudaFlowOps&) = delete;
  CudaFlowOps& operator=(const CudaFlowOps&) = delete;

  Stream stream{};

  void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
            int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) const;
  // B GEMMs in one cublasSgemmStridedBatched launch (the batched-task flow).
  void gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                    const T* A, int64_t lda, int64_t sa, const T* B, int64_t ldb, int64_t sb,
                    T beta, T* C, int64_t ldc, int64_t sc, int64_t batch) const;
  void gather_cols(int64_t N, int64_t n_out, const int32_t* idx, const T* src, int64_t lds,
                   T* dst, int64_t ldd) const;
  void broadcast_rows(int64_t N, int64_t W, const T* b, T* dst, int64_t ldd) const;
  void broadcast_rows_batched(int64_t batch, int64_t n, int64_t W, const T* b, int64_t sb, T* dst,
                              int64_t ldd) const;
  void relu(int64_t n, const T* a, T* r) const;
  void relu_mask(int64_t n, const T* a, const T* in, T* out) const;
  void col_sum(int64_t N, int64_t W, const T* src, int64_t lds, T beta, T* dst) const;
  void col_sum_batched(int64_t batch, int64_t n, int64_t W, const T* src, int64_t lds, T beta,
                       T* dst, int64_t sd) const;
  void coupling_forward(int64_t N, int64_t d2, T clamp, const T* o, const T* x2, int64_t ldx,
                        T* y2, int64_t ldy, T* s, T* log_det) const;
  void coupling_inverse(int64_t N, int64_t d2, T clamp, const T* o, const T* y2, int64_t ldy,
                        T* x2, int64_t ldx) const;
  void coupling_backward(int64_t N, int64_t d2, T clamp, T inv_n, const T* x2, int64_t ldx,
                         const T* s, T* g2, int64_t ldg, T* g_o) const;
  void coupling_tangent(int64_t N, int64_t d2, T clamp, const T* x2, int64_t ldx, const T* s,
                        const T* x2_dot, int64_t ldxd, const T* o_dot, T* y2_dot, int64_t ldyd,
                        T* s_dot) const;
  void coupling_backward_hvp(int64_t N, int64_t d2, T clamp, T inv_n, const T* x2, int64_t ldx,
                             const T* s, const T* x2_dot, int64_t ldxd, const T* s_dot, T* g2,
                             T* g2_dot, int64_t ldg, T* g_o, T* g_o_dot) const;
  void actnorm_forward(int64_t N, int64_t D, const T* ls, const T* b, const T* y, T* z) const;
  void actnorm_inverse(int64_t N, int64_t D, const T* ls, const T* b, const T* z, T* y) const;
  void nll_rows(int64_t N, int64_t D, const T* z, const T* log_det, const T* ls, T* nll) const;
  void actnorm_backward(int64_t N, int64_t D, T inv_n, const T* ls, const T* b, const T* z,
                        T* g_y, T* g_ls, T* g_b) const;
  void actnorm_tangent(int64_t N, int64_t D, const T* ls, const T* ls_dot, const T* b_dot,
                       const T* y, const T* y_dot, T* z_dot) const;
  void actnorm_backward_hvp(int64_t N, int64_t D, T inv_n, const T* ls, const T* b,
                            const T* ls_dot, const T* b_dot, const T* z, const T* z_dot, T* g_y,
                            T* g_y_dot, T* g_ls, T* g_b, T* hv_ls, T* hv_b) const;
  // flags is a device array of N bytes.
  void nonfinite_rows(int64_t N, int64_t D, const T* x, int64_t ldx, uint8_t* flags) const;
  void synchronize() const;
  // TF32 tensor cores for the GEMMs (products rounded to 10 mantissa bits) or exact FP32.
  void set_tf32(bool on);
  // BF16 tensor cores for the GEMMs: FP32 operands rounded to bfloat16 (8 mantissa bits) by
  // cuBLAS, products accumulated in FP32 (CUBLAS_COMPUTE_32F_FAST_16BF); off = FP32 or TF32.
  void set_bf16(bool on);

 private:
  bool m_bf16 = false;
  void* prepare_gemm(const GemmCall& g, const float* A, const float* B, const float* C) const;
  void* m_cublas = nullptr;  // cublasHandle_t bound to `stream`
  void* m_workspace = nullptr;  // the handle's cuBLAS workspace (device memory)
};

}  // namespace mirad
