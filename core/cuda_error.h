// Status checks for CUDA runtime, cuBLAS, cuDNN and CUB calls (CUB returns cudaError_t).
// Only included by CUDA-enabled translation units.
#pragma once

#include <cstdio>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

namespace mirad {
const char* cublas_status_string(cublasStatus_t s);
}

#define CUDA_CHECK_THROW(x)                                                               \
  do {                                                                                    \
    cudaError_t mirad_err_ = (x);                                                         \
    if (mirad_err_ != cudaSuccess) {                                                      \
      /* Clear the runtime's last error: a caught failure must not be reported again by */ \
      /* the next unrelated cudaGetLastError() (a kernel-launch check).                  */ \
      (void)cudaGetLastError();                                                           \
      ::mirad::throw_at(__FILE__, __LINE__,                                               \
                        std::string(#x " failed: ") + cudaGetErrorString(mirad_err_));    \
    }                                                                                     \
  } while (0)

#define CUDA_CHECK_PRINT(x)                                                               \
  do {                                                                                    \
    cudaError_t mirad_err_ = (x);                                                         \
    if (mirad_err_ != cudaSuccess)                                                        \
      std::fprintf(stderr, "%s:%d " #x " failed: %s\n", __FILE__, __LINE__,               \
                   cudaGetErrorString(mirad_err_));                                       \
  } while (0)

// CUB's device algorithms report through cudaError_t; a separate name keeps call sites honest.
#define CUB_CHECK_THROW(x) CUDA_CHECK_THROW(x)

// Checks the launch itself (bad config) right after a <<<>>>; asynchronous faults surface at
// the next synchronising call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK_THROW(cudaGetLastError())

#define CUBLAS_CHECK_THROW(x)                                                             \
  do {                                                                                    \
    cublasStatus_t mirad_st_ = (x);                                                       \
    if (mirad_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::mirad::throw_at(__FILE__, __LINE__,                                               \
                        std::string(#x " failed: ") + ::mirad::cublas_status_string(mirad_st_)); \
  } while (0)

#define CUDNN_CHECK_THROW(x)                                                              \
  do {                                                                                    \
    cudnnStatus_t mirad_st_ = (x);                                                        \
    if (mirad_st_ != CUDNN_STATUS_SUCCESS)                                                \
      ::mirad::throw_at(__FILE__, __LINE__,                                               \
                        std::string(#x " failed: ") + cudnnGetErrorString(mirad_st_));   \
  } while (0)
