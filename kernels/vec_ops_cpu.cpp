// CPU reference of the vector ops, and the public entry points of kernels/vec_ops.h, which
// validate their arguments and then dispatch to a backend.
#include <cmath>
#include <type_traits>

#include "core/error.h"
#include "kernels/vec_ops.h"

namespace mirad::vec {

template <typename T>
void axpy_cpu(int64_t n, T a, const T* x, T* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = axpy_element(a, x[i], y[i]);
}

template <typename T>
void axpby_cpu(int64_t n, T a, const T* x, T b, T* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = axpby_element(a, x[i], b, y[i]);
}

template <typename T>
void scale_cpu(int64_t n, T a, T* x) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}

template <typename T>
void affine_cpu(int64_t n, T a, T b, const T* x, T* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = affine_element(a, b, x[i]);
}

template <typename T>
void fill_cpu(int64_t n, T value, T* x) {
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

template <typename T>
double dot_cpu(int64_t n, const T* x, const T* y) {
  // Sequential on purpose: the reference is the simplest order, and the CUDA tree differs
  // from it by double rounding only.
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += dot_term(x[i], y[i]);
  return sum;
}

template <typename T>
unsigned long long count_nonfinite_cpu(int64_t n, const T* x) {
  unsigned long long count = 0;
  for (int64_t i = 0; i < n; ++i) count += std::isfinite(x[i]) ? 0 : 1;
  return count;
}

#define MIRAD_VEC_INSTANTIATE_CPU(T)                        \
  template void axpy_cpu<T>(int64_t, T, const T*, T*);      \
  template void axpby_cpu<T>(int64_t, T, const T*, T, T*);  \
  template void scale_cpu<T>(int64_t, T, T*);               \
  template void affine_cpu<T>(int64_t, T, T, const T*, T*); \
  template void fill_cpu<T>(int64_t, T, T*);                \
  template double dot_cpu<T>(int64_t, const T*, const T*);  \
  template unsigned long long count_nonfinite_cpu<T>(int64_t, const T*);
MIRAD_VEC_INSTANTIATE_CPU(float)
MIRAD_VEC_INSTANTIATE_CPU(double)
#undef MIRAD_VEC_INSTANTIATE_CPU

namespace {

// n and the pointers, before any work. `what` names the op in the message.
template <typename T>
void check_args(const char* what, int64_t n, Device d, std::initializer_list<const void*> ptrs) {
  CHECK_INPUT(n >= 0, "vec::{}: negative length {}", what, n);
  if (d == Device::cuda) {
    CHECK_INPUT((std::is_same_v<T, float>),
                "vec::{}: the CUDA backend is float only (got a double array)", what);
#ifndef MIRAD_HAVE_CUDA
    throw InputError(
        fmt::format("vec::{}: device 'cuda' requested but this build has no CUDA backend", what));
#endif
  }
  if (n == 0) return;
  for (const void* p : ptrs) CHECK_INPUT(p != nullptr, "vec::{}: null array of length {}", what, n);
}

// Only reached for T = float on CUDA builds (check_args refused the rest); the casts keep the
// double instantiation compiling.
template <typename T>
float* as_float(T* p) {
  return reinterpret_cast<float*>(p);
}
template <typename T>
const float* as_float(const T* p) {
  return reinterpret_cast<const float*>(p);
}

}  // namespace

template <typename T>
void axpy(int64_t n, T a, const T* x, T* y, Device d, Stream s) {
  check_args<T>("axpy", n, d, {x, y});
  if (d == Device::cpu) return axpy_cpu(n, a, x, y);
#ifdef MIRAD_HAVE_CUDA
  axpy_cuda(n, float(a), as_float(x), as_float(y), s);
#else
  (void)s;
#endif
}

template <typename T>
void axpby(int64_t n, T a, const T* x, T b, T* y, Device d, Stream s) {
  check_args<T>("axpby", n, d, {x, y});
  if (d == Device::cpu) return axpby_cpu(n, a, x, b, y);
#ifdef MIRAD_HAVE_CUDA
  axpby_cuda(n, float(a), as_float(x), float(b), as_float(y), s);
#else
  (void)s;
#endif
}

template <typename T>
void scale(int64_t n, T a, T* x, Device d, Stream s) {
  check_args<T>("scale", n, d, {x});
  if (d == Device::cpu) return scale_cpu(n, a, x);
#ifdef MIRAD_HAVE_CUDA
  scale_cuda(n, float(a), as_float(x), s);
#else
  (void)s;
#endif
}

template <typename T>
void affine(int64_t n, T a, T b, const T* x, T* y, Device d, Stream s) {
  check_args<T>("affine", n, d, {x, y});
  if (d == Device::cpu) return affine_cpu(n, a, b, x, y);
#ifdef MIRAD_HAVE_CUDA
  affine_cuda(n, float(a), float(b), as_float(x), as_float(y), s);
#else
  (void)s;
#endif
}

template <typename T>
void fill(int64_t n, T value, T* x, Device d, Stream s) {
  check_args<T>("fill", n, d, {x});
  if (d == Device::cpu) return fill_cpu(n, value, x);
#ifdef MIRAD_HAVE_CUDA
  fill_cuda(n, float(value), as_float(x), s);
#else
  (void)s;
#endif
}

namespace {

template <typename T>
void dot_with_scratch(int64_t n, const T* x, const T* y, double* out, double* scratch, Device d,
                      Stream s) {
  if (d == Device::cpu) {
    *out = dot_cpu(n, x, y);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  dot_cuda(n, as_float(x), as_float(y), out, scratch ? scratch : dot_scratch_cuda(s), s);
#else
  (void)scratch;
  (void)s;
#endif
}

}  // namespace

template <typename T>
void dot(int64_t n, const T* x, const T* y, double* out, Device d, Stream s) {
  check_args<T>("dot", n, d, {x, y});
  CHECK_INPUT(out != nullptr, "vec::dot: null output");
  dot_with_scratch(n, x, y, out, nullptr, d, s);
}

template <typename T>
void dot(int64_t n, const T* x, const T* y, double* out, DotWorkspace& workspace, Device d,
         Stream s) {
  check_args<T>("dot", n, d, {x, y});
  CHECK_INPUT(out != nullptr, "vec::dot: null output");
  double* scratch = nullptr;
  if (d == Device::cuda) {
    CHECK_INPUT(workspace.scratch.device() == Device::cuda &&
                    workspace.scratch.size() >= static_cast<std::size_t>(kDotBlocks),
                "vec::dot: the workspace must hold {} doubles on the CUDA device", kDotBlocks);
    scratch = workspace.scratch.data();
  }
  dot_with_scratch(n, x, y, out, scratch, d, s);
}

template <typename T>
double dot_host(int64_t n, const T* x, const T* y, Device d, Stream s) {
  check_args<T>("dot_host", n, d, {x, y});
  if (d == Device::cpu) return dot_cpu(n, x, y);
  double result = 0;
#ifdef MIRAD_HAVE_CUDA
  // The slot after the partials receives the result, so the convenience form needs no
  // allocation either.
  double* scratch = dot_scratch_cuda(s);
  dot_cuda(n, as_float(x), as_float(y), scratch + kDotBlocks, scratch, s);
  mem::copy(&result, Device::cpu, scratch + kDotBlocks, Device::cuda, sizeof(double), s);
  mem::synchronize(s);
#else
  (void)s;
#endif
  return result;
}

template <typename T>
void count_nonfinite(int64_t n, const T* x, unsigned long long* count, Device d, Stream s) {
  check_args<T>("count_nonfinite", n, d, {x});
  CHECK_INPUT(count != nullptr, "vec::count_nonfinite: null count");
  if (d == Device::cpu) {
    *count += count_nonfinite_cpu(n, x);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  count_nonfinite_cuda(n, as_float(x), count, s);
#else
  (void)s;
#endif
}

#define MIRAD_VEC_INSTANTIATE(T)                                                             \
  template void axpy<T>(int64_t, T, const T*, T*, Device, Stream);                           \
  template void axpby<T>(int64_t, T, const T*, T, T*, Device, Stream);                       \
  template void scale<T>(int64_t, T, T*, Device, Stream);                                    \
  template void affine<T>(int64_t, T, T, const T*, T*, Device, Stream);                      \
  template void fill<T>(int64_t, T, T*, Device, Stream);                                     \
  template void dot<T>(int64_t, const T*, const T*, double*, Device, Stream);                \
  template void dot<T>(int64_t, const T*, const T*, double*, DotWorkspace&, Device, Stream); \
  template double dot_host<T>(int64_t, const T*, const T*, Device, Stream);                  \
  template void count_nonfinite<T>(int64_t, const T*, unsigned long long*, Device, Stream);
MIRAD_VEC_INSTANTIATE(float)
MIRAD_VEC_INSTANTIATE(double)
#undef MIRAD_VEC_INSTANTIATE

}  // namespace mirad::vec
