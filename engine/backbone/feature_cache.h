// FeatureCache: every image's backbone features, computed once per job and kept in the fastest
// place that fits a memory budget: device memory, else pinned host memory, else a memory-mapped
// file. Each tap's features are one contiguous [n_images, C*H*W] region, so gathering a support
// or query set is a strided copy.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "core/device.h"

namespace mirad {

struct FeatureTapShape {
  int64_t channels = 0, height = 0, width = 0;
  int64_t numel() const { return channels * height * width; }
};

enum class CacheTier { device, pinned_host, host, mapped_file };
const char* cache_tier_name(CacheTier t);

struct CacheBudget {
  uint64_t device_bytes = 0;  // 0 = half of the device memory free at construction
  uint64_t host_bytes = 0;    // 0 = half of MemAvailable
  std::filesystem::path spill_dir;  // for the mapped file; empty = the system temp directory
};

class FeatureCache {
 public:
  FeatureCache(std::vector<FeatureTapShape> taps, int64_t n_images, Device device,
               const CacheBudget& budget = {});
  ~FeatureCache();
  FeatureCache(const FeatureCache&) = delete;
  FeatureCache& operator=(const FeatureCache&) = delete;

  CacheTier tier() const { return m_tier; }
  // Device holding the features: the cache's device for the device tier, else the CPU.
  Device location() const { return m_tier == CacheTier::device ? Device::cuda : Device::cpu; }
  uint64_t bytes() const { return m_bytes; }
  int64_t n_images() const { return m_n_images; }
  const std::vector<FeatureTapShape>& taps() const { return m_taps; }

  // Stores image `image`'s features of tap `tap` (numel floats at src on src_dev). Copies to or
  // from the device are queued on `stream`.
  void store(int64_t image, int tap, const float* src, Device src_dev, Stream stream = {});
  // The stored features (on location()). Throws if they were never stored.
  const float* features(int64_t image, int tap) const;
  bool filled(int64_t image) const;
  // Copies the tap features of `images`, in order, into dst ([images.size(), numel]) on dst_dev.
  void gather(const std::vector<int64_t>& images, int tap, float* dst, Device dst_dev,
              Stream stream = {}) const;

 private:
  float* slot(int64_t image, int tap) const;
  void check(int64_t image, int tap) const;

  std::vector<FeatureTapShape> m_taps;
  std::vector<uint64_t> m_tap_offset;  // in floats, start of each tap's region
  int64_t m_n_images = 0;
  uint64_t m_bytes = 0;
  CacheTier m_tier = CacheTier::host;
  Buffer<float> m_device;
  PinnedBuffer<float> m_host;
  float* m_mapped = nullptr;
  std::vector<uint8_t> m_stored;  // [n_images * n_taps]
};

}  // namespace mirad
