// CPU reference of the 2-D positional encoding, and the public entry points of kernels/posenc.h,
// which validate the shape and then dispatch to a backend.
#include <limits>

#include "core/error.h"
#include "kernels/posenc.h"

namespace mirad {
namespace posenc {

template <typename T>
void positional_encoding_2d_cpu(int64_t D, int64_t H, int64_t W, T* out) {
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x) {
      T* row = out + (y * W + x) * D;
      for (int64_t c = 0; c < D; ++c) row[c] = static_cast<T>(value_2d(D, y, x, c));
    }
}

template void positional_encoding_2d_cpu<float>(int64_t, int64_t, int64_t, float*);
template void positional_encoding_2d_cpu<double>(int64_t, int64_t, int64_t, double*);

}  // namespace posenc

namespace {

void check_shape(int64_t D, int64_t H, int64_t W) {
  CHECK_INPUT(D > 0 && D % 4 == 0,
              "positional encoding: D must be a positive multiple of 4 (sin and cos for x and "
              "for y; got D = {})",
              D);
  CHECK_INPUT(H > 0 && W > 0, "positional encoding: grid must be non-empty (got H = {}, W = {})", H,
              W);
  // H*W*D is used as a flat 64-bit index; refuse sizes where it would wrap.
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  CHECK_INPUT(H <= kMax / W && H * W <= kMax / D,
              "positional encoding: {} x {} x {} entries overflow a 64-bit index", H, W, D);
}

void check_output(int64_t D, int64_t H, int64_t W, const void* out) {
  check_shape(D, H, W);
  CHECK_INPUT(out != nullptr, "positional encoding: null output for a {} x {} table", H * W, D);
}

}  // namespace

void positional_encoding_2d(int64_t D, int64_t H, int64_t W, float* out, Device d, Stream s) {
  check_output(D, H, W, out);
  if (d == Device::cpu) {
    posenc::positional_encoding_2d_cpu(D, H, W, out);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  posenc::positional_encoding_2d_cuda(D, H, W, out, s);
#else
  (void)s;
  throw InputError(
      "positional encoding: device 'cuda' requested but this build has no CUDA "
      "backend");
#endif
}

void positional_encoding_2d(int64_t D, int64_t H, int64_t W, double* out) {
  check_output(D, H, W, out);
  posenc::positional_encoding_2d_cpu(D, H, W, out);
}

Buffer<float> positional_encoding_2d(int64_t D, int64_t H, int64_t W, Device d, Stream s) {
  // Validate before allocating, so a bad shape is an InputError and not a huge allocation.
  check_shape(D, H, W);
  Buffer<float> out(static_cast<std::size_t>(H * W * D), d);
  positional_encoding_2d(D, H, W, out.data(), d, s);
  return out;
}

}  // namespace mirad
