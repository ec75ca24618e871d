// CPU reference of the optimizer steps: plain loops over kernels/optim_math.h, float and double.
#include <cmath>

#include "kernels/optim_math.h"

namespace mirad::optim {

template <typename T>
int64_t count_nonfinite_cpu(int64_t n, const T* g, int64_t* first) {
  int64_t count = 0;
  *first = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(g[i])) continue;
    if (count == 0) *first = i;
    ++count;
  }
  return count;
}

template <typename T>
void sgd_step_cpu(int64_t n, T* p, const T* g, T* momentum_buffer, const SgdCoeffs<T>& c) {
  // Two loops so the common no-momentum case has no per-element null test to vectorise around.
  if (momentum_buffer) {
    for (int64_t i = 0; i < n; ++i) sgd_update(p[i], g[i], momentum_buffer + i, c);
  } else {
    for (int64_t i = 0; i < n; ++i) sgd_update(p[i], g[i], static_cast<T*>(nullptr), c);
  }
}

template <typename T>
void adam_step_cpu(int64_t n, T* p, const T* g, T* m, T* v, const AdamCoeffs<T>& c) {
  for (int64_t i = 0; i < n; ++i) adam_update(p[i], g[i], m[i], v[i], c);
}

#define MIRAD_INSTANTIATE_OPTIM_CPU(T)                                           \
  template int64_t count_nonfinite_cpu<T>(int64_t, const T*, int64_t*);          \
  template void sgd_step_cpu<T>(int64_t, T*, const T*, T*, const SgdCoeffs<T>&); \
  template void adam_step_cpu<T>(int64_t, T*, const T*, T*, T*, const AdamCoeffs<T>&);
MIRAD_INSTANTIATE_OPTIM_CPU(float)
MIRAD_INSTANTIATE_OPTIM_CPU(double)
#undef MIRAD_INSTANTIATE_OPTIM_CPU

}  // namespace mirad::optim
