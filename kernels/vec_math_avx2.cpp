// The AVX2+FMA loops of kernels/vec_math.h. This file alone is compiled with -mavx2 -mfma
// (CMakeLists.txt) and is called only after a run-time check of the CPU, so it includes no
// header with inline functions that the linker could share with baseline code.
#if defined(__x86_64__) && defined(MIRAD_HAVE_SLEEF)
#include <immintrin.h>
#include <sleef.h>

#include <cstdint>

namespace mirad::vec::detail {

void exp_avx2(const float* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, Sleef_expf8_u10avx2(_mm256_loadu_ps(x + i)));
  if (i < n) {  // the tail through a padded register
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < n - i; ++k) buf[k] = x[i + k];
    _mm256_storeu_ps(buf, Sleef_expf8_u10avx2(_mm256_loadu_ps(buf)));
    for (int64_t k = 0; k < n - i; ++k) y[i + k] = buf[k];
  }
}

void soft_clamp_avx2(const float* x, float a, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  auto f = [&](__m256 v) { return _mm256_mul_ps(av, Sleef_tanhf8_u10avx2(_mm256_div_ps(v, av))); };
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    float buf[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int64_t k = 0; k < n - i; ++k) buf[k] = x[i + k];
    _mm256_storeu_ps(buf, f(_mm256_loadu_ps(buf)));
    for (int64_t k = 0; k < n - i; ++k) y[i + k] = buf[k];
  }
}

}  // namespace mirad::vec::detail
#endif
