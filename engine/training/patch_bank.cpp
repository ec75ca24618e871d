// PatchBank: layout change, per-channel standardisation, gathers.
#include "engine/training/patch_bank.h"

#include <cmath>

#include "core/error.h"
#include "kernels/posenc.h"
#include "kernels/patch_ops.h"

namespace mirad {

namespace {

// Mean and standard deviation of every channel over all rows, in double.
ChannelNorm compute_norm(const std::vector<float>& rows, int64_t n_rows, int64_t C) {
  std::vector<double> sum(C, 0.0), sq(C, 0.0);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = rows.data() + r * C;
    for (int64_t c = 0; c < C; ++c) sum[c] += x[c];
  }
  ChannelNorm n;
  n.mean.resize(C), n.std.resize(C);
  for (int64_t c = 0; c < C; ++c) n.mean[c] = float(sum[c] / double(n_rows));
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* x = rows.data() + r * C;
    for (int64_t c = 0; c < C; ++c) {
      const double d = double(x[c]) - n.mean[c];
      sq[c] += d * d;
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    // A dead channel (constant over the training set) keeps unit scale instead of dividing
    // by zero; it then carries no information, which the flow learns at no cost.
    const double sd = std::sqrt(sq[c] / double(n_rows));
    n.std[c] = float(sd > 1e-6 * (std::abs(n.mean[c]) + 1e-6) ? sd : 1.0);
  }
  return n;
}

}  // namespace

PatchBank::PatchBank(const FeatureCache& cache, int tap, int64_t cond_dim, Device device,
                     const ChannelNorm& norm, Stream stream, const std::vector<int64_t>& images)
    : m_device(device) {
  const FeatureTapShape& s = cache.taps().at(tap);
  m_n = images.empty() ? cache.n_images() : int64_t(images.size());
  m_c = s.channels, m_h = s.height, m_w = s.width, m_cond = cond_dim;
  CHECK_INPUT(m_n > 0, "patch bank: no images");
  const int64_t HW = m_h * m_w, numel = s.numel();
  // The cache is channel-major per image; transpose on the host one image at a time, so a
  // spilled (memory-mapped) cache is read once, sequentially.
  std::vector<float> chw(numel), rows(size_t(m_n) * numel);
  for (int64_t i = 0; i < m_n; ++i) {
    const int64_t src = images.empty() ? i : images[i];
    mem::copy(chw.data(), Device::cpu, cache.features(src, tap), cache.location(),
              sizeof(float) * numel, stream);
    mem::synchronize(stream);
    patchops::chw_to_rows(1, m_c, HW, chw.data(), rows.data() + i * numel, Device::cpu);
  }
  init(std::move(rows), norm, stream);
}

PatchBank::PatchBank(std::vector<float> rows, int64_t n_images, int64_t channels, int64_t height,
                     int64_t width, int64_t cond_dim, Device device, const ChannelNorm& norm,
                     Stream stream)
    : m_n(n_images), m_c(channels), m_h(height), m_w(width), m_cond(cond_dim), m_device(device) {
  CHECK_INPUT(n_images > 0 && channels > 0 && height > 0 && width > 0,
              "patch bank: empty shape ({} images, {} x {} x {})", n_images, channels, height,
              width);
  CHECK_INPUT(int64_t(rows.size()) == n_images * channels * height * width,
              "patch bank: {} values for {} images of {} x {} x {}", rows.size(), n_images,
              channels, height, width);
  init(std::move(rows), norm, stream);
}

void PatchBank::init(std::vector<float> rows, const ChannelNorm& norm, Stream stream) {
  const int64_t n_rows = m_n * hw();
  for (size_t i = 0; i < rows.size(); ++i)
    CHECK_INPUT(std::isfinite(rows[i]),
                "features hold NaN or Inf (image {}, position {}, channel {}): the backbone or "
                "the feature file is broken",
                int64_t(i) / (hw() * m_c), (int64_t(i) / m_c) % hw(), int64_t(i) % m_c);
  if (norm.mean.empty()) {
    m_norm = compute_norm(rows, n_rows, m_c);
  } else {
    CHECK_INPUT(int64_t(norm.mean.size()) == m_c && int64_t(norm.std.size()) == m_c,
                "patch bank: channel norm has {} means and {} deviations for {} channels",
                norm.mean.size(), norm.std.size(), m_c);
    for (int64_t c = 0; c < m_c; ++c)
      CHECK_INPUT(std::isfinite(norm.mean[c]) && std::isfinite(norm.std[c]) && norm.std[c] > 0,
                  "patch bank: channel norm of channel {} is not a finite positive scale", c);
    m_norm = norm;
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    float* x = rows.data() + r * m_c;
    for (int64_t c = 0; c < m_c; ++c) x[c] = (x[c] - m_norm.mean[c]) / m_norm.std[c];
  }
  // FNV-1a over each image's standardised rows.
  m_fingerprints.resize(m_n);
  const size_t per_image = size_t(hw() * m_c) * sizeof(float);
  for (int64_t i = 0; i < m_n; ++i) {
    uint64_t h = 1469598103934665603ULL;
    const auto* b = reinterpret_cast<const unsigned char*>(rows.data()) + i * per_image;
    for (size_t k = 0; k < per_image; ++k) h = (h ^ b[k]) * 1099511628211ULL;
    m_fingerprints[i] = h;
  }
  m_rows = Buffer<float>::from_host(rows, m_device, stream);
  if (m_cond > 0) {
    m_posenc = positional_encoding_2d(m_cond, m_h, m_w, m_device, stream);
    const int64_t n = max_score_images();
    m_cond_rep = Buffer<float>(n * hw() * m_cond, m_device);
    patchops::repeat_rows(n, hw(), m_cond, m_posenc.data(), m_cond_rep.data(), m_device, stream);
  }
  mem::synchronize(stream);
}

MatrixView<const float> PatchBank::image_rows(int64_t first, int64_t count) const {
  CHECK_INPUT(first >= 0 && count > 0 && first + count <= m_n,
              "patch bank: images [{}, {}) out of range [0, {})", first, first + count, m_n);
  return {m_rows.data() + first * hw() * m_c, count * hw(), m_c, m_device};
}

MatrixView<const float> PatchBank::image_condition(int64_t count) const {
  if (m_cond == 0) return {};
  CHECK_INPUT(count > 0 && count <= max_score_images(),
              "patch bank: condition for {} images (at most {} at a time)", count,
              max_score_images());
  return {m_cond_rep.data(), count * hw(), m_cond, m_device};
}

void PatchBank::gather(const std::vector<int64_t>& rows, PatchBatch& out, Stream stream) const {
  const int64_t m = int64_t(rows.size()), n_rows = m_n * hw();
  CHECK_INPUT(m > 0, "patch bank: empty batch");
  // Indices come from the episode scheduler; check them on the host, where they are, so the
  // device gather never sees a bad one.
  for (int64_t r : rows)
    CHECK_INPUT(r >= 0 && r < n_rows, "patch bank: row {} out of range [0, {})", r, n_rows);
  out.x.reserve_discard(m * m_c);
  if (out.x.device() != m_device) out.x = Buffer<float>(m * m_c, m_device);
  if (m_cond > 0) {
    out.c.reserve_discard(m * m_cond);
    if (out.c.device() != m_device) out.c = Buffer<float>(m * m_cond, m_device);
  }
  const int64_t* idx = rows.data();
  if (m_device != Device::cpu) {
    if (out.idx.device() != m_device) out.idx = Buffer<int64_t>(0, m_device);
    out.idx.reserve_discard(m);
    out.idx.copy_from(rows.data(), Device::cpu, m, stream);
    idx = out.idx.data();
  }
  patchops::gather_rows(m, idx, m_rows.data(), m_c, n_rows, m_cond ? m_posenc.data() : nullptr,
                        hw(), m_cond, out.x.data(), m_cond ? out.c.data() : nullptr, m_device,
                        stream);
  out.rows = m, out.dim = m_c, out.cond_dim = m_cond;
}

}  // namespace mirad
