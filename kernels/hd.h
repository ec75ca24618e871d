// MIRAD_HD marks per-element math shared by the CPU reference and the CUDA kernels.
#pragma once

#if defined(__CUDACC__)
#define MIRAD_HD __host__ __device__ __forceinline__
#else
#define MIRAD_HD inline
#endif
