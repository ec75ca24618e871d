// Move-only RAII buffers on host or device, and non-owning matrix views into them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/device.h"
#include "core/error.h"

namespace mirad {

namespace mem {
void* allocate(std::size_t bytes, Device d);
void release(void* p, Device d) noexcept;
// Copies bytes between any two devices; CUDA copies are async on the stream.
void copy(void* dst, Device dst_dev, const void* src, Device src_dev, std::size_t bytes,
          Stream stream);
void zero(void* p, Device d, std::size_t bytes, Stream stream);
void synchronize(Stream stream);

// Page-locked host memory, so host-to-device copies can run asynchronously and at full PCIe
// speed. Pinning can fail (ulimits, no device): then this falls back to ordinary pageable
// memory, clears the CUDA error and says so through `pinned`.
void* allocate_host_pinned(std::size_t bytes, bool* pinned);
void release_host_pinned(void* p, bool pinned) noexcept;
}  // namespace mem

// A move-only host buffer that is pinned when possible (see mem::allocate_host_pinned).
template <typename T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(std::size_t n) : m_size(n) {
    if (n) m_data = static_cast<T*>(mem::allocate_host_pinned(n * sizeof(T), &m_pinned));
  }
  ~PinnedBuffer() { mem::release_host_pinned(m_data, m_pinned); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept { swap(o); }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      PinnedBuffer tmp(std::move(o));
      swap(tmp);
    }
    return *this;
  }
  void swap(PinnedBuffer& o) noexcept {
    std::swap(m_data, o.m_data);
    std::swap(m_size, o.m_size);
    std::swap(m_pinned, o.m_pinned);
  }
  T* data() { return m_data; }
  const T* data() const { return m_data; }
  std::size_t size() const { return m_size; }
  bool pinned() const { return m_pinned; }

 private:
  T* m_data = nullptr;
  std::size_t m_size = 0;
  bool m_pinned = false;
};

// A non-owning view of n contiguous elements on one device: a whole Buffer, or a row of a
// [B, P] batch of parameter vectors (MAML's adapted copies), without an allocation.
template <typename T>
struct VecView {
  T* data = nullptr;
  int64_t size = 0;
  Device device = Device::cpu;

  VecView() = default;
  VecView(T* p, int64_t n, Device d) : data(p), size(n), device(d) {}
  // Implicit const-ification, as with pointers.
  operator VecView<const T>() const { return {data, size, device}; }
  VecView slice(int64_t offset, int64_t n) const {
    CHECK_THROW(offset >= 0 && n >= 0 && offset + n <= size);
    return {data + offset, n, device};
  }
};

// Owns n elements of T on one device. Copying is deleted ("prevent performance accidents");
// use copy_from() to spell a copy out.
template <typename T>
class Buffer {
 public:
  Buffer() = default;
  Buffer(std::size_t n, Device d) : m_size(n), m_device(d) {
    if (n) m_data = static_cast<T*>(mem::allocate(n * sizeof(T), d));
  }
  ~Buffer() { mem::release(m_data, m_device); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      Buffer tmp(std::move(o));
      swap(tmp);
    }
    return *this;
  }
  void swap(Buffer& o) noexcept {
    std::swap(m_data, o.m_data);
    std::swap(m_size, o.m_size);
    std::swap(m_device, o.m_device);
  }

  T* data() { return m_data; }
  const T* data() const { return m_data; }
  std::size_t size() const { return m_size; }
  std::size_t bytes() const { return m_size * sizeof(T); }
  // Views of the whole buffer, so APIs taking VecView accept a Buffer as it is.
  operator VecView<T>() { return {m_data, static_cast<int64_t>(m_size), m_device}; }
  operator VecView<const T>() const { return {m_data, static_cast<int64_t>(m_size), m_device}; }
  VecView<T> view() { return *this; }
  VecView<const T> view() const { return *this; }
  Device device() const { return m_device; }
  bool empty() const { return m_size == 0; }

  // Grows (never shrinks) to at least n elements; contents are not kept.
  void reserve_discard(std::size_t n) {
    if (n > m_size) *this = Buffer(n, m_device);
  }
  void copy_from(const T* src, Device src_dev, std::size_t n, Stream s = {}) {
    CHECK_THROW(n <= m_size);
    mem::copy(m_data, m_device, src, src_dev, n * sizeof(T), s);
  }
  void copy_from(const Buffer& o, Stream s = {}) {
    CHECK_THROW(o.size() == m_size);
    copy_from(o.data(), o.device(), o.size(), s);
  }
  void zero(Stream s = {}) { mem::zero(m_data, m_device, bytes(), s); }
  std::vector<T> to_host(Stream s = {}) const {
    std::vector<T> h(m_size);
    mem::copy(h.data(), Device::cpu, m_data, m_device, bytes(), s);
    mem::synchronize(s);
    return h;
  }
  static Buffer from_host(const std::vector<T>& h, Device d, Stream s = {}) {
    Buffer b(h.size(), d);
    b.copy_from(h.data(), Device::cpu, h.size(), s);
    mem::synchronize(s);
    return b;
  }

 private:
  T* m_data = nullptr;
  std::size_t m_size = 0;
  Device m_device = Device::cpu;
};

// A row-major matrix view: rows x cols with leading dimension ld (>= cols).
template <typename T>
struct MatrixView {
  T* data = nullptr;
  int64_t rows = 0, cols = 0, ld = 0;
  Device device = Device::cpu;

  MatrixView() = default;
  MatrixView(T* p, int64_t r, int64_t c, Device d = Device::cpu, int64_t ld_ = -1)
      : data(p), rows(r), cols(c), ld(ld_ < 0 ? c : ld_), device(d) {}
  // Implicit const-ification, as with pointers.
  operator MatrixView<const T>() const { return {data, rows, cols, device, ld}; }
  T* row(int64_t i) const { return data + i * ld; }
  // Columns [c0, c0+n) of every row, sharing storage.
  MatrixView col_slice(int64_t c0, int64_t n) const { return {data + c0, rows, n, device, ld}; }
  bool contiguous() const { return ld == cols; }
  int64_t numel() const { return rows * cols; }
};

template <typename T>
MatrixView<T> view(Buffer<T>& b, int64_t rows, int64_t cols) {
  CHECK_THROW(static_cast<std::size_t>(rows * cols) <= b.size());
  return {b.data(), rows, cols, b.device()};
}
template <typename T>
MatrixView<const T> view(const Buffer<T>& b, int64_t rows, int64_t cols) {
  CHECK_THROW(static_cast<std::size_t>(rows * cols) <= b.size());
  return {b.data(), rows, cols, b.device()};
}

}  // namespace mirad
