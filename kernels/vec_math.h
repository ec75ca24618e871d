// Vectorised exp and soft clamp (a*tanh(x/a)) over arrays, for the CPU flow's element-wise work:
// the coupling's transcendentals were a fifth of a forward+backward's single-threaded time at
// D = 112 (perf, BM_FlowForwardBackward). float goes through SLEEF (1-ULP functions; AVX2+FMA
// when the CPU has them, else SSE2, chosen once at run time); double stays scalar libm, so the
// float64 reference path is unchanged.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/coupling_math.h"

namespace mirad::vec {

// y[i] = exp(x[i]); y may alias x.
void exp(const float* x, float* y, int64_t n);
// y[i] = a * tanh(x[i] / a); y may alias x.
void soft_clamp(const float* x, float a, float* y, int64_t n);
// Which float implementation runs here: "avx2", "sse2" or "scalar".
const char* isa();

#if defined(__x86_64__) && defined(MIRAD_HAVE_SLEEF)
// The two float implementations by name, so that tests can check both on any x86-64 machine;
// call the avx2 ones only when avx2_available().
namespace detail {
void exp_sse2(const float* x, float* y, int64_t n);
void soft_clamp_sse2(const float* x, float a, float* y, int64_t n);
void exp_avx2(const float* x, float* y, int64_t n);
void soft_clamp_avx2(const float* x, float a, float* y, int64_t n);
bool avx2_available();
}  // namespace detail
#endif

inline void exp(const double* x, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = math::exp_(x[i]);
}
inline void soft_clamp(const double* x, double a, double* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = math::soft_clamp(x[i], a);
}

}  // namespace mirad::vec
