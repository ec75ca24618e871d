// Anomaly-map ops (bilinear resize as torch, Gaussian blur as scipy, per-row top-k mean and
// mean): the per-element math shared by both backends, the CPU reference and CUDA launchers,
// and the validating entry points.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "core/device.h"
#include "kernels/hd.h"

namespace mirad::mapops {

// ---- Shared per-element math. ----

// One output coordinate of a linear resize: in[i0] * l0 + in[i1] * l1.
struct LinearTap {
  int64_t i0, i1;
  float l0, l1;
};

// a*b + c with one rounding on both backends. torch's kernels get the same fused multiply-add
// from their compilers (nvcc contracts by default; the AVX2 builds of its CPU kernels have
// -mfma), and a separately rounded product moves the source coordinate by an ulp: up to
// 1.5e-5 px on a 600-px map, 3e-5 in value, as measured against torch on an H200 machine.
MIRAD_HD float fused_multiply_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// torch's align_corners=False source index (area_pixel_compute_source_index with the scale
// in_size / out_size, as when interpolate is given `size`): src = scale * (dst + 0.5) - 0.5,
// clamped at 0 (not at the top: there i1 is clamped instead, so the last input repeats).
// Computed in float with a fused multiply-add, as torch's float kernels do, so the weights
// are torch's own.
MIRAD_HD LinearTap linear_tap(int64_t dst, int64_t in_size, int64_t out_size) {
  const float scale = float(in_size) / float(out_size);
  float src = fused_multiply_add(scale, float(dst) + 0.5f, -0.5f);
  if (src < 0.f) src = 0.f;
  LinearTap t;
  t.i0 = int64_t(src);                         // src >= 0, so truncation is floor
  if (t.i0 > in_size - 1) t.i0 = in_size - 1;  // guards float rounding for huge sizes
  t.i1 = t.i0 + (t.i0 < in_size - 1 ? 1 : 0);
  t.l1 = src - float(t.i0);
  t.l0 = 1.f - t.l1;
  return t;
}

// scipy.ndimage mode='reflect' ("d c b a | a b c d | d c b a", the edge pixel repeated),
// extended periodically with period 2n, so any offset maps inside, also when the kernel radius
// exceeds the map (scipy's NI_ExtendLine does the same). A length-1 line maps everything to 0.
MIRAD_HD int64_t reflect_index(int64_t i, int64_t n) {
  if (i >= 0 && i < n) return i;  // the common case costs no division
  const int64_t period = 2 * n;
  int64_t m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - 1 - m;
}

// A patch NLL robust-standardised by its tap's median and IQR, in double and rounded to float
// once; NaN (a failed score) becomes +Inf, the most anomalous value there is.
MIRAD_HD float standardize_value(float v, double median, double iqr) {
  return v != v ? INFINITY : static_cast<float>((double(v) - median) / iqr);
}

// acc + w * x with the product and the sum each rounded to float (no fused multiply-add on
// either backend), so a map fused on the GPU adds up exactly as on the CPU.
MIRAD_HD float weighted_add(float acc, float w, float x) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(acc, __fmul_rn(w, x));
#else
  const volatile float p = w * x;  // volatile: no contraction even where the ISA has FMA
  return acc + p;
#endif
}

// scipy's truncation: radius = int(truncate * sigma + 0.5) with truncate = 4 (not ceil).
MIRAD_HD int64_t gaussian_radius(double sigma) {
  return int64_t(4.0 * sigma + 0.5);
}
// Unnormalised tap j: exp(-0.5 / sigma^2 * j^2), scipy's expression and operation order.
MIRAD_HD double gaussian_phi(int64_t j, double sigma) {
  return exp(-0.5 / (sigma * sigma) * double(j * j));
}
// The normaliser: sum of phi over -r..r, added left to right (scipy: phi.sum()).
MIRAD_HD double gaussian_norm(int64_t radius, double sigma) {
  double sum = 0;
  for (int64_t j = -radius; j <= radius; ++j) sum += gaussian_phi(j < 0 ? -j : j, sigma);
  return sum;
}

// ---- Public entry points: host pointers for Device::cpu, device pointers for Device::cuda
// (work queued on s, nothing waits). Bad sizes or null pointers are InputErrors; n == 0 (or
// rows == 0) is a no-op. ----

// Bilinear resize of n maps [n, h, w] -> [n, oh, ow]: torch.nn.functional.interpolate(
// mode="bilinear", align_corners=False, antialias=False, size=(oh, ow)) for up- and
// down-sampling (linear_tap above). The weights are float, as in torch; the CPU mixes in double
// and the CUDA kernel in float with torch's CUDA formula. Measured on an H200 machine (8 shapes,
// up and down): CUDA bit-identical to torch's CUDA kernel, the CPU within 5e-7 of torch on
// values in [-1, 3]; the tests allow 1e-6 * max(1, |value|). in and out must not overlap.
void resize_bilinear(int64_t n, int64_t h, int64_t w, const float* in, int64_t oh, int64_t ow,
                     float* out, Device d, Stream s = {});

// Separable Gaussian blur of n maps [n, h, w]: scipy.ndimage.gaussian_filter(maps,
// sigma=(0, sigma, sigma), mode='reflect', truncate=4.0) on float32 maps, i.e.
// - radius r = int(4*sigma + 0.5), taps exp(-j^2 / (2 sigma^2)) normalised over -r..r
//   (r = 0, for sigma < 0.125, is a copy);
// - border mode 'reflect' about the edge (the edge pixel is repeated: d c b a | a b c d),
//   periodic with period 2n when r exceeds the map, so any radius is exact;
// - vertical pass first, rounded to float, then horizontal, as scipy does with float32 output.
// The CPU accumulates each pass in double in scipy's order (centre tap, then symmetric pairs
// from the outermost inward): bit-identical to scipy 'reflect' in 8 shapes measured (radius
// below and above the map size). CUDA accumulates in float (consumer GPUs have little double
// throughput), smallest taps first: measured within 5e-7 of scipy on values in [-1, 3]; the
// tests allow 2e-6 * max|in|.
// sigma must be positive and finite, and r at most 2^20. out may equal in. The CUDA version
// takes stream-ordered scratch for the intermediate map and the taps (cudaMallocFromPoolAsync /
// cudaFreeAsync: no device-wide sync) from a private pool per device that keeps the largest
// scratch used so far for the life of the process, so repeated blurs allocate nothing.
void gaussian_blur(int64_t n, int64_t h, int64_t w, float sigma, const float* in, float* out,
                   Device d, Stream s = {});

// Per row of a row-major [rows, cols] matrix: topk_mean = the mean of its k largest values and
// mean = the mean of all its values, both accumulated in double (on both backends) and rounded
// to float once. Non-finite rules (both backends, never NaN out):
// - NaN counts as +Inf (a failed score is the most anomalous). A row holding any NaN or +Inf
//   has topk_mean = +Inf (they are always among its top k, since k >= 1) and mean = +Inf,
//   even when it also holds -Inf: +Inf wins, so mean == topk_mean when k == cols.
// - Otherwise -Inf values take part as numbers: a -Inf in the top k gives topk_mean = -Inf,
//   and any -Inf gives mean = -Inf.
// Ties at the k-th value are counted once per copy (the mean of a multiset). The backends add
// in different orders, so they agree to double rounding before the float rounding (tests allow
// 1e-6 relative). 1 <= k <= cols; outputs hold rows floats each and must not overlap in. CUDA:
// one block per row, a 4-pass radix select on order-preserving keys; cols < 2^31.
void row_topk_mean(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                   float* mean, Device d, Stream s = {});

// out[i] = standardize_value(in[i], median, iqr) for i < n (the fused map's per-tap step).
// iqr must be positive and finite; out may equal in.
void standardize(int64_t n, const float* in, double median, double iqr, float* out, Device d,
                 Stream s = {});
// acc[i] = weighted_add(acc[i], w, in[i]) for i < n: adds one tap's share to the fused map.
// in must not overlap acc.
void accumulate(int64_t n, float w, const float* in, float* acc, Device d, Stream s = {});

// ---- Backend launchers (arguments already validated). ----

// CPU reference (kernels/map_ops_cpu.cpp).
void resize_bilinear_cpu(int64_t n, int64_t h, int64_t w, const float* in, int64_t oh, int64_t ow,
                         float* out);
// The r+1 normalised half-taps w[0..r] of the 1-D kernel (w[j] for offsets +j and -j).
std::vector<double> gaussian_half_kernel(double sigma);
void gaussian_blur_cpu(int64_t n, int64_t h, int64_t w, float sigma, const float* in, float* out);
void row_topk_mean_cpu(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                       float* mean);
void standardize_cpu(int64_t n, const float* in, double median, double iqr, float* out);
void accumulate_cpu(int64_t n, float w, const float* in, float* acc);

// CUDA (kernels/map_ops_cuda.cu), queued on `stream`.
void resize_bilinear_cuda(int64_t n, int64_t h, int64_t w, const float* in, int64_t oh, int64_t ow,
                          float* out, Stream stream);
void gaussian_blur_cuda(int64_t n, int64_t h, int64_t w, float sigma, const float* in, float* out,
                        Stream stream);
void row_topk_mean_cuda(int64_t rows, int64_t cols, int64_t k, const float* in, float* topk_mean,
                        float* mean, Stream stream);
void standardize_cuda(int64_t n, const float* in, double median, double iqr, float* out,
                      Stream stream);
void accumulate_cuda(int64_t n, float w, const float* in, float* acc, Stream stream);

}  // namespace mirad::mapops
