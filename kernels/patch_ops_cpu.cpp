// CPU reference of the feature layout ops, and the public entry points of kernels/patch_ops.h,
// which validate their arguments (and, on the CPU, the gather indices) and then dispatch.
#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>

#include "core/error.h"
#include "kernels/patch_ops.h"

namespace mirad::patchops {

void chw_to_rows_cpu(int64_t n, int64_t C, int64_t HW, const float* in, float* out) {
  // Blocked over channels so each input row segment is read sequentially and the writes of a
  // block stay in cache (a plain transpose strides by C on every write).
  constexpr int64_t kBlock = 32;
  for (int64_t img = 0; img < n; ++img) {
    const float* src = in + img * C * HW;
    float* dst = out + img * C * HW;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t c1 = std::min(C, c0 + kBlock);
      for (int64_t p = 0; p < HW; ++p)
        for (int64_t c = c0; c < c1; ++c) dst[p * C + c] = src[c * HW + p];
    }
  }
}

void gather_rows_cpu(int64_t m, const int64_t* idx, const float* X, int64_t C, const float* P,
                     int64_t HW, int64_t Cc, float* out_x, float* out_c) {
  for (int64_t j = 0; j < m; ++j) {
    std::memcpy(out_x + j * C, X + idx[j] * C, C * sizeof(float));
    if (out_c)
      std::memcpy(out_c + j * Cc, P + position_of_row(idx[j], HW) * Cc, Cc * sizeof(float));
  }
}

void repeat_rows_cpu(int64_t n, int64_t HW, int64_t Cc, const float* P, float* out) {
  const int64_t table = HW * Cc;
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * table, P, table * sizeof(float));
}

namespace {

constexpr int64_t kMaxIndex = std::numeric_limits<int64_t>::max();

// a*b floats as a flat 64-bit count (bytes included), refusing sizes where it would wrap.
int64_t checked_count(const char* what, int64_t a, int64_t b) {
  CHECK_INPUT(a >= 0 && b >= 0, "patchops::{}: negative size ({} x {})", what, a, b);
  if (a == 0 || b == 0) return 0;
  CHECK_INPUT(a <= kMaxIndex / b / int64_t(sizeof(float)),
              "patchops::{}: {} x {} floats overflow a 64-bit index", what, a, b);
  return a * b;
}

void check_backend(const char* what, Device d) {
#ifndef MIRAD_HAVE_CUDA
  CHECK_INPUT(d == Device::cpu,
              "patchops::{}: device 'cuda' requested but this build has no CUDA backend", what);
#else
  (void)what;
  (void)d;
#endif
}

bool overlaps(const void* a, int64_t a_bytes, const void* b, int64_t b_bytes) {
  const auto* pa = static_cast<const char*>(a);
  const auto* pb = static_cast<const char*>(b);
  return std::less<>()(pa, pb + b_bytes) && std::less<>()(pb, pa + a_bytes);
}
bool overlaps_f(const float* a, int64_t a_count, const float* b, int64_t b_count) {
  return overlaps(a, a_count * int64_t(sizeof(float)), b, b_count * int64_t(sizeof(float)));
}

void gather_rows_impl(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                      const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c,
                      unsigned long long* invalid_count, Device d, Stream s) {
  CHECK_INPUT(m >= 0 && m <= kMaxIndex / int64_t(sizeof(int64_t)),
              "patchops::gather_rows: row count {} out of range", m);
  CHECK_INPUT(C > 0 && n_rows > 0,
              "patchops::gather_rows: the source must be a non-empty [rows, C] matrix (got {} x "
              "{})",
              n_rows, C);
  const int64_t x_count = checked_count("gather_rows", n_rows, C);
  const int64_t out_x_count = checked_count("gather_rows", m, C);
  int64_t p_count = 0, out_c_count = 0;
  if (out_c) {
    CHECK_INPUT(HW > 0 && Cc > 0,
                "patchops::gather_rows: the condition table must be a non-empty [HW, Cc] matrix "
                "(got {} x {})",
                HW, Cc);
    CHECK_INPUT(n_rows % HW == 0,
                "patchops::gather_rows: {} feature rows are not whole images of HW = {} "
                "positions, so row % HW is not a position",
                n_rows, HW);
    p_count = checked_count("gather_rows", HW, Cc);
    out_c_count = checked_count("gather_rows", m, Cc);
  }
  check_backend("gather_rows", d);
  if (m == 0) return;
  CHECK_INPUT(idx != nullptr && X != nullptr && out_x != nullptr,
              "patchops::gather_rows: null index, source or output pointer");
  CHECK_INPUT(!out_c || P != nullptr, "patchops::gather_rows: out_c given without a table P");
  CHECK_INPUT(!overlaps_f(out_x, out_x_count, X, x_count) &&
                  (!out_c || (!overlaps_f(out_c, out_c_count, P, p_count) &&
                              !overlaps_f(out_c, out_c_count, out_x, out_x_count))),
              "patchops::gather_rows: outputs overlap each other or the inputs");
  const int64_t idx_bytes = m * int64_t(sizeof(int64_t)), f = int64_t(sizeof(float));
  CHECK_INPUT(!overlaps(idx, idx_bytes, out_x, out_x_count * f) &&
                  (!out_c || !overlaps(idx, idx_bytes, out_c, out_c_count * f)),
              "patchops::gather_rows: the indices overlap an output");
  if (d == Device::cpu) {
    // An invalid index throws before anything is written; invalid_count is a CUDA-side tally.
    for (int64_t j = 0; j < m; ++j)
      CHECK_INPUT(idx[j] >= 0 && idx[j] < n_rows,
                  "patchops::gather_rows: index {} (entry {}) is outside [0, {})", idx[j], j,
                  n_rows);
    return gather_rows_cpu(m, idx, X, C, P, HW, Cc, out_x, out_c);
  }
#ifdef MIRAD_HAVE_CUDA
  gather_rows_cuda(m, idx, X, C, n_rows, P, HW, Cc, out_x, out_c, invalid_count, s);
#else
  (void)invalid_count;
  (void)s;
#endif
}

}  // namespace

void chw_to_rows(int64_t n, int64_t C, int64_t HW, const float* in, float* out, Device d,
                 Stream s) {
  CHECK_INPUT(n >= 0, "patchops::chw_to_rows: negative image count {}", n);
  CHECK_INPUT(C > 0 && HW > 0, "patchops::chw_to_rows: empty feature map ({} channels x {})", C,
              HW);
  const int64_t per_image = checked_count("chw_to_rows", C, HW);
  const int64_t count = checked_count("chw_to_rows", n, per_image);
  check_backend("chw_to_rows", d);
  if (n == 0) return;
  CHECK_INPUT(in != nullptr && out != nullptr, "patchops::chw_to_rows: null pointer");
  CHECK_INPUT(!overlaps_f(in, count, out, count),
              "patchops::chw_to_rows: input and output overlap (it is not an in-place op)");
  if (d == Device::cpu) return chw_to_rows_cpu(n, C, HW, in, out);
#ifdef MIRAD_HAVE_CUDA
  chw_to_rows_cuda(n, C, HW, in, out, s);
#else
  (void)s;
#endif
}

void gather_rows(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                 const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c, Device d,
                 Stream s) {
  gather_rows_impl(m, idx, X, C, n_rows, P, HW, Cc, out_x, out_c, nullptr, d, s);
}

void gather_rows(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                 const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c,
                 unsigned long long* invalid_count, Device d, Stream s) {
  CHECK_INPUT(invalid_count != nullptr, "patchops::gather_rows: null invalid-index counter");
  gather_rows_impl(m, idx, X, C, n_rows, P, HW, Cc, out_x, out_c, invalid_count, d, s);
}

void repeat_rows(int64_t n, int64_t HW, int64_t Cc, const float* P, float* out, Device d,
                 Stream s) {
  CHECK_INPUT(n >= 0, "patchops::repeat_rows: negative image count {}", n);
  CHECK_INPUT(HW > 0 && Cc > 0, "patchops::repeat_rows: empty table ({} x {})", HW, Cc);
  const int64_t table = checked_count("repeat_rows", HW, Cc);
  const int64_t count = checked_count("repeat_rows", n, table);
  check_backend("repeat_rows", d);
  if (n == 0) return;
  CHECK_INPUT(P != nullptr && out != nullptr, "patchops::repeat_rows: null pointer");
  CHECK_INPUT(!overlaps_f(P, table, out, count), "patchops::repeat_rows: table and output overlap");
  if (d == Device::cpu) return repeat_rows_cpu(n, HW, Cc, P, out);
#ifdef MIRAD_HAVE_CUDA
  repeat_rows_cuda(n, HW, Cc, P, out, s);
#else
  (void)s;
#endif
}

}  // namespace mirad::patchops
