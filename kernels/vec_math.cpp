// kernels/vec_math.h: SLEEF's SSE2 loops (every x86-64 CPU has SSE2), the dispatch to the AVX2
// ones in kernels/vec_math_avx2.cpp, and scalar libm on other architectures or without SLEEF.
#include "kernels/vec_math.h"

#if defined(__x86_64__) && defined(MIRAD_HAVE_SLEEF)
#include <emmintrin.h>
#include <strings.h>

#include <cstdlib>
#include <sleef.h>
#endif

namespace mirad::vec {

#if defined(__x86_64__) && defined(MIRAD_HAVE_SLEEF)

namespace {

// MIRAD_MAX_CPU_ISA=SSE2 forces the SSE2 loops on an AVX2 machine, as OPENBLAS_CORETYPE and
// ONEDNN_MAX_CPU_ISA force those libraries' kernels: CI runs the kernel-sensitive tests on
// several such paths (tools/cpu_paths.sh), so that one machine sees what other CPUs compute.
bool has_avx2() {
  static const bool yes = [] {
    const char* cap = std::getenv("MIRAD_MAX_CPU_ISA");
    if (cap && strcasecmp(cap, "sse2") == 0) return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return yes;
}

template <typename F>
void sse2_loop(const float* x, float* y, int64_t n, F&& f) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) _mm_storeu_ps(y + i, f(_mm_loadu_ps(x + i)));
  if (i < n) {
    float buf[4] = {0, 0, 0, 0};
    for (int64_t k = 0; k < n - i; ++k) buf[k] = x[i + k];
    _mm_storeu_ps(buf, f(_mm_loadu_ps(buf)));
    for (int64_t k = 0; k < n - i; ++k) y[i + k] = buf[k];
  }
}

}  // namespace

namespace detail {
void exp_sse2(const float* x, float* y, int64_t n) {
  sse2_loop(x, y, n, [](__m128 v) { return Sleef_expf4_u10sse2(v); });
}
void soft_clamp_sse2(const float* x, float a, float* y, int64_t n) {
  const __m128 av = _mm_set1_ps(a);
  sse2_loop(x, y, n, [&](__m128 v) {
    return _mm_mul_ps(av, Sleef_tanhf4_u10sse2(_mm_div_ps(v, av)));
  });
}
bool avx2_available() { return has_avx2(); }
}  // namespace detail

void exp(const float* x, float* y, int64_t n) {
  if (has_avx2()) return detail::exp_avx2(x, y, n);
  detail::exp_sse2(x, y, n);
}

void soft_clamp(const float* x, float a, float* y, int64_t n) {
  if (has_avx2()) return detail::soft_clamp_avx2(x, a, y, n);
  detail::soft_clamp_sse2(x, a, y, n);
}

const char* isa() { return has_avx2() ? "avx2" : "sse2"; }

#else

void exp(const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = math::exp_(x[i]);
}
void soft_clamp(const float* x, float a, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = math::soft_clamp(x[i], a);
}
const char* isa() { return "scalar"; }

#endif

}  // namespace mirad::vec
