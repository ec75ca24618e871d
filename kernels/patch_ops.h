// Feature layout ops between the backbone and the flow (channel-major maps to per-position
// rows, the training-batch gather of rows and their positional condition, repeated condition
// tables): the CPU reference and CUDA launchers, and the validating entry points.
#pragma once

#include <cstdint>

#include "core/device.h"
#include "kernels/hd.h"

namespace mirad::patchops {

// The position of feature row `row` inside its image: rows are whole images of HW positions,
// so the condition of row i*HW + p is the table's row p.
MIRAD_HD int64_t position_of_row(int64_t row, int64_t HW) {
  return row % HW;
}

// ---- Public entry points: host pointers for Device::cpu, device pointers for Device::cuda
// (work queued on s, nothing waits). Sizes are validated (InputError: negative or empty
// dimensions, 64-bit overflow, null pointers when there is work, overlapping input and
// output); a count of 0 images or rows is a no-op. ----

// Per image, [C, HW] channel-major (a backbone feature map) -> [HW, C] rows (one row per
// position): out[(i*HW + p)*C + c] = in[(i*C + c)*HW + p] for n images. in and out are
// contiguous and must not overlap.
void chw_to_rows(int64_t n, int64_t C, int64_t HW, const float* in, float* out, Device d,
                 Stream s = {});

// Training-batch gather, for j < m:
//   out_x[j, :] = X[idx[j], :]            (X is [n_rows, C])
//   out_c[j, :] = P[idx[j] % HW, :]       (P is the [HW, Cc] positional-encoding table)
// idx is int64 on the same device as the data. out_c may be null: then P, HW and Cc are not
// used (nor checked). With out_c, n_rows must be a whole number of images (n_rows % HW == 0).
// Index validation differs by backend, because the CUDA indices are not on the host:
// - CPU: every index is checked against [0, n_rows) before anything is written; an invalid one
//   is an InputError and the outputs are untouched.
// - CUDA: the caller is responsible for the indices (the episode scheduler draws them on the
//   host, in range). A bad index never reads out of bounds: its out_x and out_c rows are filled
//   with NaN, so the loss turns non-finite and the optimizers' non-finite gate skips the step.
//   The overload below also counts bad indices on the device.
void gather_rows(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                 const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c, Device d,
                 Stream s = {});
// As above; CUDA adds the number of out-of-range indices to *invalid_count (a device counter,
// not zeroed here; read it back when convenient, no sync is done). On the CPU an invalid index
// still throws, and *invalid_count (host) is left as it is. invalid_count must not be null.
void gather_rows(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                 const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c,
                 unsigned long long* invalid_count, Device d, Stream s = {});

// The condition for n whole images: out[i*HW + p, :] = P[p, :] for i < n (P is [HW, Cc]).
// P and out must not overlap.
void repeat_rows(int64_t n, int64_t HW, int64_t Cc, const float* P, float* out, Device d,
                 Stream s = {});

// ---- Backend launchers (arguments already validated; CPU indices already checked). ----

void chw_to_rows_cpu(int64_t n, int64_t C, int64_t HW, const float* in, float* out);
void gather_rows_cpu(int64_t m, const int64_t* idx, const float* X, int64_t C, const float* P,
                     int64_t HW, int64_t Cc, float* out_x, float* out_c);
void repeat_rows_cpu(int64_t n, int64_t HW, int64_t Cc, const float* P, float* out);

void chw_to_rows_cuda(int64_t n, int64_t C, int64_t HW, const float* in, float* out, Stream stream);
// invalid_count may be null here (then bad indices only produce NaN rows).
void gather_rows_cuda(int64_t m, const int64_t* idx, const float* X, int64_t C, int64_t n_rows,
                      const float* P, int64_t HW, int64_t Cc, float* out_x, float* out_c,
                      unsigned long long* invalid_count, Stream stream);
void repeat_rows_cuda(int64_t n, int64_t HW, int64_t Cc, const float* P, float* out, Stream stream);

}  // namespace mirad::patchops
