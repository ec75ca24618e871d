// The per-device SM count behind core/cuda_launch.cuh's grid sizes.

#include <atomic>

#include "core/cuda_error.h"
#include "core/cuda_launch.cuh"

namespace mirad::cuda {

int sm_count() {
  int device = 0;
  CUDA_CHECK_THROW(cudaGetDevice(&device));
  // One slot per device, 0 until known. Threads that race on a first query each store the same
  // value, so relaxed atomics suffice and no lock is taken on the launch path. Devices past the
  // table (none exist today) are queried every time rather than guessed.
  constexpr int kMaxDevices = 64;
  static std::atomic<int> cache[kMaxDevices];
  if (device >= 0 && device < kMaxDevices) {
    const int known = cache[device].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int sms = 0;
  CUDA_CHECK_THROW(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  if (device >= 0 && device < kMaxDevices) cache[device].store(sms, std::memory_order_relaxed);
  return sms;
}

}  // namespace mirad::cuda
