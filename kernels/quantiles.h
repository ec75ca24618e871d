// Robust quantiles of a score array (numpy's 'linear' rule); the thresholds built on them live
// in engine/detector/threshold.h.
//
// Rules shared by every backend:
// - Quantile p of n sorted values x[0..n-1] sits at h = (n-1)*p and is
//   x[lo] + (h - lo) * (x[lo+1] - x[lo]) with lo = floor(h): numpy's default, method 7.
// - NaN scores are left out and counted in n_nan: a NaN says "the model failed on this
//   image", which is not a position on the score scale.
// - +/-Inf scores are kept as values and sort to the ends. An overflowed NLL is the most
//   anomalous score there is; dropping it would hide exactly the image the rule must reject.
//   Interpolation never turns them into NaN where a limit exists: a weight of 0 or equal
//   neighbours give x[lo] itself, and an interval with one infinite end gives that end. Only an
//   interval from -Inf to +Inf with a weight strictly between 0 and 1 is NaN.
// - An empty array, an all-NaN array, or a probability outside [0, 1] is an InputError.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"

namespace mirad {

struct QuartileStats {
  double q1 = 0, median = 0, q3 = 0;
  // q3 - q1, except 0 when q1 == q3, so that quartiles at the same infinity give 0, not NaN.
  double iqr = 0;
  int64_t n_valid = 0;  // scores that took part (everything but NaN)
  int64_t n_nan = 0;
};

// The probabilities behind QuartileStats' q1, median and q3, for every backend.
inline constexpr double kQuartileProbabilities[3] = {0.25, 0.5, 0.75};

// Where quantile p falls among n sorted values: x[lo] and x[hi] (hi = lo+1, or lo at the top)
// are mixed with weight `frac` on x[hi].
struct QuantilePosition {
  int64_t lo = 0, hi = 0;
  double frac = 0;
};
// Throws InputError for p outside [0, 1] (NaN included); n must be positive.
QuantilePosition quantile_position(int64_t n, double p);
// x_lo + frac*(x_hi - x_lo) in double, with the infinity rules above. Every backend calls this
// one function, so CPU and CUDA results agree exactly (up to the sign of a zero: -0.0 and +0.0
// tie on the CPU, while radix sort puts -0.0 first).
double interpolate_quantile(double x_lo, double x_hi, double frac);
// Fills a QuartileStats from the three quartiles and the counts (the IQR rule lives here).
QuartileStats make_quartile_stats(double q1, double median, double q3, int64_t n_valid,
                                  int64_t n_nan);

// Exact CPU reference: copies the non-NaN scores to double and selects the needed order
// statistics with std::nth_element. The caller's array is never modified.
QuartileStats quartiles_cpu(const float* x, int64_t n);
QuartileStats quartiles_cpu(const double* x, int64_t n);
std::vector<double> quantiles_cpu(const float* x, int64_t n, const std::vector<double>& probs);
std::vector<double> quantiles_cpu(const double* x, int64_t n, const std::vector<double>& probs);

// Device scratch for quartiles_cuda: the NaN-free copy, its radix-sort partner and CUB's temp
// storage. It only grows and is kept between calls, so a refinement loop or a benchmark does
// not pay a cudaMalloc/cudaFree (which synchronises the device) on every call. A call has
// finished with it when it returns, so one workspace serves any number of sequential calls on
// any stream; concurrent callers (threads) each need their own. It holds memory on the device
// that was current when it first grew.
struct QuantileWorkspace {
  // Layout: [NaN-free count (int64) | keys A (n floats) | keys B (n floats)], each 256-aligned.
  Buffer<std::byte> keys{0, Device::cuda};
  Buffer<std::byte> cub_temp{0, Device::cuda};
};

// Quartiles of n floats in device memory (d_x), all work queued on `stream`; the call waits for
// its three order-statistic pairs, copies only those to the host (not the sorted array) and
// interpolates there with interpolate_quantile. d_x is only read. Always declared, so callers
// link in every build; a build without CUDA throws InputError, as parse_device does.
QuartileStats quartiles_cuda(const float* d_x, int64_t n, Stream stream,
                             QuantileWorkspace& workspace);
// As above with a workspace that lives for this call only.
QuartileStats quartiles_cuda(const float* d_x, int64_t n, Stream stream);

// Backend dispatch: x is host memory for Device::cpu and device memory for Device::cuda.
QuartileStats quartiles(const float* x, int64_t n, Device device, Stream stream);

}  // namespace mirad
