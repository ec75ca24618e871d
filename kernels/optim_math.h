// Per-element SGD and Adam updates shared by the CPU reference and the CUDA kernel, and the
// launchers of both backends. Everything that depends on the step count (bias corrections)
// is folded into the coefficient structs on the host in double, so the per-element math is
// the same few multiply-adds on both sides and the backends differ only in rounding.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/device.h"
#include "kernels/hd.h"

namespace mirad::optim {

// Overloads rather than std::sqrt: nvcc and g++ must both pick the single-precision root
// for float, not promote to double.
MIRAD_HD float root(float x) {
  return sqrtf(x);
}
MIRAD_HD double root(double x) {
  return sqrt(x);
}

// SGD with heavy-ball momentum as torch.optim.SGD (dampening 0, no Nesterov).
template <typename T>
struct SgdCoeffs {
  T lr;
  T momentum;      // 0 disables the momentum buffer entirely
  T weight_decay;  // L2: added to the gradient as weight_decay * p
};

// torch initialises the buffer to g on the first step; a zero buffer gives momentum*0 + g,
// the same value, so reset() can simply zero it and there is no first-step branch.
template <typename T>
MIRAD_HD void sgd_update(T& p, T g, T* momentum_buffer, const SgdCoeffs<T>& c) {
  g = g + c.weight_decay * p;
  if (momentum_buffer) {
    *momentum_buffer = c.momentum * *momentum_buffer + g;
    g = *momentum_buffer;
  }
  p = p - c.lr * g;
}

// Adam (Kingma & Ba, Algorithm 1, in torch.optim.Adam's arrangement). At most one of l2 and
// decoupled_decay is active: l2 is the coupled penalty added to the gradient, decoupled_decay
// is AdamW's multiplicative shrink 1 - lr*weight_decay (1 when off).
template <typename T>
struct AdamCoeffs {
  T beta1, beta2, eps;
  T l2;
  T decoupled_decay;
  T step_size;  // lr / (1 - beta1^t): bias correction of the first moment
  T sqrt_bc2;   // sqrt(1 - beta2^t): bias correction of the second moment
};

template <typename T>
MIRAD_HD void adam_update(T& p, T g, T& m, T& v, const AdamCoeffs<T>& c) {
  g = g + c.l2 * p;
  // AdamW shrinks the weight before the moment step, with the pre-step value (torch order).
  p = p * c.decoupled_decay;
  m = c.beta1 * m + (T(1) - c.beta1) * g;
  v = c.beta2 * v + (T(1) - c.beta2) * g * g;
  // torch divides sqrt(v) by sqrt(bc2) before adding eps, so eps sits on the corrected scale.
  p = p - c.step_size * m / (root(v) / c.sqrt_bc2 + c.eps);
}

// ---- Backend launchers. The engine (engine/flow/optimizer.cpp) validates, then calls these. ----

// CPU reference (kernels/optim_cpu.cpp), float and double. Counts the non-finite entries of
// g and the index of the first one (-1 if none).
template <typename T>
int64_t count_nonfinite_cpu(int64_t n, const T* g, int64_t* first);
// A null momentum_buffer means momentum == 0.
template <typename T>
void sgd_step_cpu(int64_t n, T* p, const T* g, T* momentum_buffer, const SgdCoeffs<T>& c);
template <typename T>
void adam_step_cpu(int64_t n, T* p, const T* g, T* m, T* v, const AdamCoeffs<T>& c);

// CUDA (kernels/optim_cuda.cu), float only; everything is queued on `stream`.
// status is 2 device words: [0] = count of non-finite entries of g, [1] = ~(first index), so
// that a zeroed word means "none" and atomicMax finds the smallest index. Zeroed here.
void count_nonfinite_cuda(int64_t n, const float* g, unsigned long long* status, Stream stream);
// gate: a status written by count_nonfinite_cuda earlier on the stream; when it reports a
// non-finite entry the kernel returns without writing, so params and state stay unchanged
// without a host round trip in between. Null gate = unconditional.
void sgd_step_cuda(int64_t n, float* p, const float* g, float* momentum_buffer,
                   const SgdCoeffs<float>& c, const unsigned long long* gate, Stream stream);
void adam_step_cuda(int64_t n, float* p, const float* g, float* m, float* v,
                    const AdamCoeffs<float>& c, const unsigned long long* gate, Stream stream);

}  // namespace mirad::optim
