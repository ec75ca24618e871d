// FeatureCache: tier choice under the budget, the unlinked memory-mapped spill file, copies.
#include "engine/backbone/feature_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#ifdef MIRAD_HAVE_CUDA
#include "core/cuda_error.h"
#endif

namespace mirad {

const char* cache_tier_name(CacheTier t) {
  switch (t) {
    case CacheTier::device: return "device";
    case CacheTier::pinned_host: return "pinned host";
    case CacheTier::host: return "host";
    case CacheTier::mapped_file: return "memory-mapped file";
  }
  return "?";
}

namespace {

uint64_t mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 4ull << 30;  // unknown: assume a modest 4 GiB
}

uint64_t device_free_bytes() {
#ifdef MIRAD_HAVE_CUDA
  size_t free = 0, total = 0;
  if (cuda_available() && cudaMemGetInfo(&free, &total) == cudaSuccess) return free;
  cudaGetLastError();
#endif
  return 0;
}

}  // namespace

FeatureCache::FeatureCache(std::vector<FeatureTapShape> taps, int64_t n_images, Device device,
                           const CacheBudget& budget)
    : m_taps(std::move(taps)), m_n_images(n_images) {
  CHECK_INPUT(n_images > 0, "feature cache: no images");
  CHECK_INPUT(!m_taps.empty(), "feature cache: no feature taps");
  uint64_t floats = 0;
  for (const auto& t : m_taps) {
    CHECK_INPUT(t.channels > 0 && t.height > 0 && t.width > 0,
                "feature cache: tap shape {}x{}x{} has a zero size", t.channels, t.height,
                t.width);
    m_tap_offset.push_back(floats);
    floats += uint64_t(t.numel()) * uint64_t(n_images);
  }
  m_bytes = floats * sizeof(float);
  m_stored.assign(size_t(n_images) * m_taps.size(), 0);

  const uint64_t dev_budget = budget.device_bytes ? budget.device_bytes : device_free_bytes() / 2;
  const uint64_t host_budget = budget.host_bytes ? budget.host_bytes : mem_available_bytes() / 2;
  if (device == Device::cuda && m_bytes <= dev_budget) {
    try {
      m_device = Buffer<float>(floats, Device::cuda);
      m_tier = CacheTier::device;
      return;
    } catch (const std::exception&) {
      // Free memory was an estimate; someone else took it meanwhile. Host memory will do.
#ifdef MIRAD_HAVE_CUDA
      cudaGetLastError();
#endif
    }
  }
  if (m_bytes <= host_budget) {
    m_host = PinnedBuffer<float>(floats);
    m_tier = m_host.pinned() ? CacheTier::pinned_host : CacheTier::host;
    return;
  }
  // Over both budgets: a file the kernel pages in and out. It is unlinked at once, so it
  // vanishes with the process even after a crash and never lands beside the user's data.
  std::filesystem::path dir = budget.spill_dir.empty() ? std::filesystem::temp_directory_path()
                                                       : budget.spill_dir;
  std::string tmpl = (dir / "mirad_features_XXXXXX").string();
  int fd = ::mkstemp(tmpl.data());
  CHECK_INPUT(fd >= 0, "feature cache: cannot create a spill file in {}: {}", dir.string(),
              std::strerror(errno));
  ::unlink(tmpl.c_str());
  // Reserve the blocks now: a sparse file would only fail when a page is first written, and
  // on a full disk that failure is a SIGBUS, not an error anyone can report.
  if (int err = ::posix_fallocate(fd, 0, off_t(m_bytes)); err != 0) {
    ::close(fd);
    throw InputError(fmt::format(
        "feature cache: cannot reserve {} bytes for the spill file in {}: {} (free disk space, "
        "or raise the memory budgets)",
        m_bytes, dir.string(), std::strerror(err)));
  }
  void* p = ::mmap(nullptr, m_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const int map_err = errno;
  ::close(fd);
  CHECK_INPUT(p != MAP_FAILED, "feature cache: cannot map {} bytes: {}", m_bytes,
              std::strerror(map_err));
  m_mapped = static_cast<float*>(p);
  m_tier = CacheTier::mapped_file;
}

FeatureCache::~FeatureCache() {
  if (m_mapped) ::munmap(m_mapped, m_bytes);
}

void FeatureCache::check(int64_t image, int tap) const {
  CHECK_INPUT(image >= 0 && image < m_n_images, "feature cache: image {} out of range [0, {})",
              image, m_n_images);
  CHECK_INPUT(tap >= 0 && size_t(tap) < m_taps.size(), "feature cache: tap {} out of range [0, {})",
              tap, m_taps.size());
}

float* FeatureCache::slot(int64_t image, int tap) const {
  float* base = m_tier == CacheTier::device        ? const_cast<float*>(m_device.data())
                : m_tier == CacheTier::mapped_file ? m_mapped
                                                   : const_cast<float*>(m_host.data());
  return base + m_tap_offset[tap] + uint64_t(image) * uint64_t(m_taps[tap].numel());
}

void FeatureCache::store(int64_t image, int tap, const float* src, Device src_dev,
                         Stream stream) {
  check(image, tap);
  CHECK_INPUT(src != nullptr, "feature cache: null source");
  mem::copy(slot(image, tap), location(), src, src_dev, sizeof(float) * m_taps[tap].numel(),
            stream);
  m_stored[size_t(image) * m_taps.size() + tap] = 1;
}

const float* FeatureCache::features(int64_t image, int tap) const {
  check(image, tap);
  CHECK_INPUT(m_stored[size_t(image) * m_taps.size() + tap],
              "feature cache: features of image {} tap {} were never stored", image, tap);
  return slot(image, tap);
}

bool FeatureCache::filled(int64_t image) const {
  check(image, 0);
  for (size_t t = 0; t < m_taps.size(); ++t)
    if (!m_stored[size_t(image) * m_taps.size() + t]) return false;
  return true;
}

void FeatureCache::gather(const std::vector<int64_t>& images, int tap, float* dst,
                          Device dst_dev, Stream stream) const {
  const int64_t numel = m_taps.at(tap).numel();
  for (size_t i = 0; i < images.size(); ++i)
    mem::copy(dst + i * numel, dst_dev, features(images[i], tap), location(),
              sizeof(float) * numel, stream);
}

}  // namespace mirad
