// cuBLAS side of CudaFlowOps: the handle's lifetime (constructor/destructor), the row-major
// GEMM, and cublas_status_string() declared in core/cuda_error.h.

#include <algorithm>
#include <climits>
#include <cstdio>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"
#include "kernels/flow_ops_cuda.h"

namespace mirad {

const char* cublas_status_string(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  // A status newer than this list: cuBLAS can still name it.
  return cublasGetStatusString(s);
}

namespace {

cublasHandle_t to_cublas(void* h) {
  return static_cast<cublasHandle_t>(h);
}
using cuda::to_cuda;

}  // namespace

CudaFlowOps::CudaFlowOps(Stream s) : stream(s) {
  cublasHandle_t handle = nullptr;
  CUBLAS_CHECK_THROW(cublasCreate(&handle));
  // Bind to our stream and keep TF32 off, so GEMMs match the CPU within float rounding.
  cublasStatus_t st = cublasSetStream(handle, to_cuda(stream));
  if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH);
  if (st != CUBLAS_STATUS_SUCCESS) {
    cublasDestroy(handle);  // the constructor throws, so no destructor will run
    CUBLAS_CHECK_THROW(st);
  }
  // A workspace of the handle's own: cuBLAS must not allocate while a training step is being
  // captured as a CUDA graph (32 MiB, NVIDIA's recommendation for Hopper).
  constexpr size_t kWorkspace = size_t(32) << 20;
  if (cudaMalloc(&m_workspace, kWorkspace) == cudaSuccess) {
    st = cublasSetWorkspace(handle, m_workspace, kWorkspace);
    if (st != CUBLAS_STATUS_SUCCESS) {
      cudaFree(m_workspace);
      cublasDestroy(handle);
      CUBLAS_CHECK_THROW(st);
    }
  } else {
    cudaGetLastError();  // no room for it: cuBLAS keeps its default workspace
    m_workspace = nullptr;
  }
  m_cublas = handle;
}

void CudaFlowOps::set_tf32(bool on) {
  CUBLAS_CHECK_THROW(cublasSetMathMode(to_cublas(m_cublas),
                                       on ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
}

void CudaFlowOps::set_bf16(bool on) {
  m_bf16 = on;
}

CudaFlowOps::~CudaFlowOps() {
  if (!m_cublas) return;
  // Destructors must not throw: report and carry on.
  const cublasStatus_t st = cublasDestroy(to_cublas(m_cublas));
  if (m_workspace) CUDA_CHECK_PRINT(cudaFree(m_workspace));
  if (st != CUBLAS_STATUS_SUCCESS)
    std::fprintf(stderr, "%s:%d cublasDestroy failed: %s\n", __FILE__, __LINE__,
                 cublas_status_string(st));
}

std::vector<GemmCall>*& gemm_recorder() {
  thread_local std::vector<GemmCall>* recorder = nullptr;
  return recorder;
}

// Shared by gemm() and gemm_batched(): validates the row-major operands (BLAS wants
// ld >= max(1, width); cuBLAS takes int extents, which the flow never comes near), records the
// call for the benchmarks, and binds the handle to `stream` (a public member that may have
// changed since construction). Returns null when there is nothing to compute.
void* CudaFlowOps::prepare_gemm(const GemmCall& g, const float* A, const float* B,
                                const float* C) const {
  CHECK_THROW(g.M >= 0 && g.N >= 0 && g.K >= 0 && g.batch >= 0);
  const int64_t width_a = g.trans_a ? g.M : g.K;
  const int64_t width_b = g.trans_b ? g.K : g.N;
  CHECK_THROW(g.lda >= std::max<int64_t>(1, width_a));
  CHECK_THROW(g.ldb >= std::max<int64_t>(1, width_b));
  CHECK_THROW(g.ldc >= std::max<int64_t>(1, g.N));
  CHECK_THROW(g.M <= INT_MAX && g.N <= INT_MAX && g.K <= INT_MAX && g.batch <= INT_MAX);
  CHECK_THROW(g.lda <= INT_MAX && g.ldb <= INT_MAX && g.ldc <= INT_MAX);
  // Outputs of different tasks must not overlap (cuBLAS runs them concurrently).
  CHECK_THROW(g.batch <= 1 || g.sc >= g.M * g.ldc);
  if (g.M == 0 || g.N == 0 || g.batch == 0) return nullptr;
  CHECK_THROW(C != nullptr);
  if (g.K > 0) CHECK_THROW(A != nullptr && B != nullptr);
  if (auto* r = gemm_recorder()) r->push_back(g);
  cublasHandle_t handle = to_cublas(m_cublas);
  cudaStream_t bound = nullptr;
  CUBLAS_CHECK_THROW(cublasGetStream(handle, &bound));
  if (bound != to_cuda(stream)) CUBLAS_CHECK_THROW(cublasSetStream(handle, to_cuda(stream)));
  return handle;
}

// Row-major C = alpha*op(A)*op(B) + beta*C. A row-major matrix read column-major is its
// transpose, so cuBLAS computes C^T = op(B)^T * op(A)^T: B goes first, A second, with the
// same transpose flags, and the M/N extents swapped.
void CudaFlowOps::gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                       float* C, int64_t ldc) const {
  const GemmCall g{trans_a, trans_b, M, N, K, lda, ldb, ldc, 0, 0, 0, 1};
  auto handle = static_cast<cublasHandle_t>(prepare_gemm(g, A, B, C));
  if (!handle) return;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (m_bf16) {
    // FP32 in and out, BF16 tensor-core products with FP32 accumulation: no BF16 copies of
    // the operands to keep, and the flow's element-wise work stays FP32.
    CUBLAS_CHECK_THROW(cublasGemmEx(handle, op_b, op_a, static_cast<int>(N), static_cast<int>(M),
                                    static_cast<int>(K), &alpha, B, CUDA_R_32F,
                                    static_cast<int>(ldb), A, CUDA_R_32F, static_cast<int>(lda),
                                    &beta, C, CUDA_R_32F, static_cast<int>(ldc),
                                    CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    return;
  }
  CUBLAS_CHECK_THROW(cublasSgemm(handle, op_b, op_a, static_cast<int>(N), static_cast<int>(M),
                                 static_cast<int>(K), &alpha, B, static_cast<int>(ldb), A,
                                 static_cast<int>(lda), &beta, C, static_cast<int>(ldc)));
}

// The batched form of gemm(): the same row-major-to-column-major swap, with the strides
// swapped along with their operands. One launch for every task of a meta-batch.
void CudaFlowOps::gemm_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                               float alpha, const float* A, int64_t lda, int64_t sa,
                               const float* B, int64_t ldb, int64_t sb, float beta, float* C,
                               int64_t ldc, int64_t sc, int64_t batch) const {
  const GemmCall g{trans_a, trans_b, M, N, K, lda, ldb, ldc, sa, sb, sc, batch};
  auto handle = static_cast<cublasHandle_t>(prepare_gemm(g, A, B, C));
  if (!handle) return;
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (m_bf16) {
    CUBLAS_CHECK_THROW(cublasGemmStridedBatchedEx(
        handle, op_b, op_a, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha,
        B, CUDA_R_32F, static_cast<int>(ldb), static_cast<long long>(sb), A, CUDA_R_32F,
        static_cast<int>(lda), static_cast<long long>(sa), &beta, C, CUDA_R_32F,
        static_cast<int>(ldc), static_cast<long long>(sc), static_cast<int>(batch),
        CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    return;
  }
  CUBLAS_CHECK_THROW(cublasSgemmStridedBatched(
      handle, op_b, op_a, static_cast<int>(N), static_cast<int>(M), static_cast<int>(K), &alpha,
      B, static_cast<int>(ldb), static_cast<long long>(sb), A, static_cast<int>(lda),
      static_cast<long long>(sa), &beta, C, static_cast<int>(ldc), static_cast<long long>(sc),
      static_cast<int>(batch)));
}

}  // namespace mirad
