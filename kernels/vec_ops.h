// Vector ops on flat parameter-sized arrays (axpy, axpby, scale, affine, fill, dot, non-finite
// count) for MAML, so theta' = theta - a*g and g - a*Hv never leave the device: per-element
// math shared by both backends, the CPU reference and CUDA launchers, and the entry points.
#pragma once

#include <cstdint>

#include "core/buffer.h"
#include "core/device.h"
#include "kernels/hd.h"

namespace mirad::vec {

// ---- Per-element math, shared by the CPU reference and the CUDA kernels. ----

template <typename T>
MIRAD_HD T axpy_element(T a, T x, T y) {
  return y + a * x;
}
// BLAS convention: with b == 0, y is not read, so a fresh (uninitialised, possibly NaN)
// output buffer can take theta' = theta - a*g directly.
template <typename T>
MIRAD_HD T axpby_element(T a, T x, T b, T y) {
  return b == T(0) ? a * x : a * x + b * y;
}
template <typename T>
MIRAD_HD T affine_element(T a, T b, T x) {
  return a * x + b;
}
// The product of two floats is exact in double, so a float dot differs between backends only
// by the order of the double additions.
template <typename T>
MIRAD_HD double dot_term(T x, T y) {
  return double(x) * double(y);
}

// ---- Public entry points. ----
// T is float or double on the CPU and float on CUDA (a double CUDA call is an InputError).
// Pointers are host memory for Device::cpu and device memory for Device::cuda; CUDA work is
// queued on s and never waits for it unless the name says so (dot_host). n may be 0 (a no-op,
// except that dot writes 0) and any size that fits in memory: indexing is 64-bit. Negative n,
// or a null pointer with n > 0, is an InputError. x and y may alias everywhere (each element
// is read before it is written).

// y += a*x
template <typename T>
void axpy(int64_t n, T a, const T* x, T* y, Device d, Stream s = {});
// y = a*x + b*y; with b == 0, y is write-only (its old contents, even NaN, do not matter).
template <typename T>
void axpby(int64_t n, T a, const T* x, T b, T* y, Device d, Stream s = {});
// x *= a (a NaN in x stays NaN, also for a == 0: a failed gradient must stay visible).
template <typename T>
void scale(int64_t n, T a, T* x, Device d, Stream s = {});
// y = a*x + b
template <typename T>
void affine(int64_t n, T a, T b, const T* x, T* y, Device d, Stream s = {});
template <typename T>
void fill(int64_t n, T value, T* x, Device d, Stream s = {});

// *out = sum_i x[i]*y[i], accumulated in double (each product is exact in double for float
// input). out is host memory for Device::cpu and device memory for Device::cuda, where nothing
// waits. The CUDA sum is deterministic: a grid fixed by n (at most kDotBlocks blocks of
// kDotThreads threads) writes one partial per block, then one block adds the partials; the
// tree order is fixed and no floating-point atomics are used, so repeated calls on the same
// data give bit-identical results. The CPU adds sequentially, so the backends differ by the
// order of double additions only (relative ~n * 1e-16 of sum |x*y|).
//
// The CUDA partials need kDotBlocks doubles of device scratch. This overload takes them from a
// process-wide cache keyed by (device, stream): allocated on first use of a pair (one
// cudaMalloc, which synchronises the device once) and kept for the life of the process, never
// freed (an 8 KiB block per pair; freeing it from a static destructor could run after the CUDA
// runtime has shut down). Calls on one stream are ordered by that stream, so sharing its
// scratch is safe; distinct streams never share one. A program that creates and destroys many
// streams, or reuses a destroyed stream's handle while its work is still pending, should pass
// its own DotWorkspace instead.
template <typename T>
void dot(int64_t n, const T* x, const T* y, double* out, Device d, Stream s = {});

inline constexpr int kDotThreads = 256;
inline constexpr int kDotBlocks = 1024;
// Caller-owned scratch for CUDA dot products: kDotBlocks partials and one result slot (used by
// dot_host). One workspace serves any number of calls on one stream; concurrent streams each
// need their own.
struct DotWorkspace {
  explicit DotWorkspace(Device d = Device::cuda) : scratch(kDotBlocks + 1, d) {}
  Buffer<double> scratch;
};
template <typename T>
void dot(int64_t n, const T* x, const T* y, double* out, DotWorkspace& workspace, Device d,
         Stream s = {});

// dot() followed by a wait on s (CUDA), returning the value to the host.
template <typename T>
double dot_host(int64_t n, const T* x, const T* y, Device d, Stream s = {});

// *count += the number of entries of x that are NaN or +/-Inf. It adds, so several arrays can
// be checked with one read-back: zero *count first. count is a device pointer for
// Device::cuda, where the count is accumulated on the device with integer atomics (exact) and
// nothing waits.
template <typename T>
void count_nonfinite(int64_t n, const T* x, unsigned long long* count, Device d, Stream s = {});

// ---- Backend launchers: arguments already validated by the entry points above. ----

// CPU reference (kernels/vec_ops_cpu.cpp), float and double.
template <typename T>
void axpy_cpu(int64_t n, T a, const T* x, T* y);
template <typename T>
void axpby_cpu(int64_t n, T a, const T* x, T b, T* y);
template <typename T>
void scale_cpu(int64_t n, T a, T* x);
template <typename T>
void affine_cpu(int64_t n, T a, T b, const T* x, T* y);
template <typename T>
void fill_cpu(int64_t n, T value, T* x);
template <typename T>
double dot_cpu(int64_t n, const T* x, const T* y);
template <typename T>
unsigned long long count_nonfinite_cpu(int64_t n, const T* x);

// CUDA (kernels/vec_ops_cuda.cu), float, queued on `stream`. dot_cuda's scratch holds at least
// kDotBlocks doubles; dot_scratch_cuda returns the cached one for the current device and
// `stream` (see dot above), with kDotBlocks + 1 doubles.
void axpy_cuda(int64_t n, float a, const float* x, float* y, Stream stream);
void axpby_cuda(int64_t n, float a, const float* x, float b, float* y, Stream stream);
void scale_cuda(int64_t n, float a, float* x, Stream stream);
void affine_cuda(int64_t n, float a, float b, const float* x, float* y, Stream stream);
void fill_cuda(int64_t n, float value, float* x, Stream stream);
void dot_cuda(int64_t n, const float* x, const float* y, double* out, double* scratch,
              Stream stream);
double* dot_scratch_cuda(Stream stream);
void count_nonfinite_cuda(int64_t n, const float* x, unsigned long long* count, Stream stream);

}  // namespace mirad::vec
