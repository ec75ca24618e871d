// Host/device allocation and copies behind Buffer; the only place that calls cudaMalloc.
#include <cstdlib>
#include <cstring>
#include <new>

#include "core/buffer.h"
#include "core/device.h"
#ifdef MIRAD_HAVE_CUDA
#include "core/cuda_error.h"
#endif

namespace mirad {

bool cuda_compiled() {
#ifdef MIRAD_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_available() {
#ifdef MIRAD_HAVE_CUDA
  // Asked once: the answer cannot change within a process.
  static const bool available = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      cudaGetLastError();  // clear the "no device" error so later calls are not poisoned
      return false;
    }
    return n > 0;
  }();
  return available;
#else
  return false;
#endif
}

Device parse_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda" || name == "gpu") {
    CHECK_INPUT(cuda_compiled(), "device 'cuda' requested but this build has no CUDA backend");
    CHECK_INPUT(cuda_available(), "device 'cuda' requested but no CUDA device is available");
    return Device::cuda;
  }
  throw InputError(fmt::format("unknown device '{}' (expected cpu or cuda)", name));
}

namespace mem {

void* allocate(std::size_t bytes, Device d) {
  if (bytes == 0) return nullptr;
  if (d == Device::cpu) {
    // 64-byte alignment for vector loads; aligned_alloc wants a multiple of the alignment.
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return p;
  }
#ifdef MIRAD_HAVE_CUDA
  void* p = nullptr;
  CUDA_CHECK_THROW(cudaMalloc(&p, bytes));
  return p;
#else
  throw std::runtime_error("CUDA buffer requested in a build without CUDA");
#endif
}

void release(void* p, Device d) noexcept {
  if (!p) return;
  if (d == Device::cpu) {
    std::free(p);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  CUDA_CHECK_PRINT(cudaFree(p));
#endif
}

void copy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes,
          Stream stream) {
  if (bytes == 0) return;
  if (dst_dev == Device::cpu && src_dev == Device::cpu) {
    std::memmove(dst, src, bytes);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  CUDA_CHECK_THROW(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault,
                                   static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
  throw std::runtime_error("CUDA copy requested in a build without CUDA");
#endif
}

void zero(void* p, Device d, std::size_t bytes, Stream stream) {
  if (bytes == 0) return;
  if (d == Device::cpu) {
    std::memset(p, 0, bytes);
    return;
  }
#ifdef MIRAD_HAVE_CUDA
  CUDA_CHECK_THROW(cudaMemsetAsync(p, 0, bytes, static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
  throw std::runtime_error("CUDA memset requested in a build without CUDA");
#endif
}

void synchronize(Stream stream) {
#ifdef MIRAD_HAVE_CUDA
  // Errors here are real asynchronous faults from earlier launches on this stream.
  if (cuda_available())
    CUDA_CHECK_THROW(cudaStreamSynchronize(static_cast<cudaStream_t>(stream.handle)));
#else
  (void)stream;
#endif
}

void* allocate_host_pinned(std::size_t bytes, bool* pinned) {
  *pinned = false;
  if (bytes == 0) return nullptr;
#ifdef MIRAD_HAVE_CUDA
  if (cuda_available()) {
    void* p = nullptr;
    if (cudaMallocHost(&p, bytes) == cudaSuccess) {
      *pinned = true;
      return p;
    }
    cudaGetLastError();  // clear it: a failed pin is not a failed job
  }
#endif
  return allocate(bytes, Device::cpu);
}

void release_host_pinned(void* p, bool pinned) noexcept {
  if (!p) return;
#ifdef MIRAD_HAVE_CUDA
  if (pinned) {
    CUDA_CHECK_PRINT(cudaFreeHost(p));
    return;
  }
#endif
  (void)pinned;
  release(p, Device::cpu);
}

}  // namespace mem
}  // namespace mirad
