// BatchStreamer: the image -> device pipeline. Host threads decode and preprocess batch b+1
// into a ring of pinned buffers while batch b is copied to the device on a copy stream and
// consumed (the backbone) on a compute stream; CUDA events order the three. On the CPU the same
// ring overlaps decoding with the consumer. Pinning failure falls back to pageable memory.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "core/device.h"

namespace mirad {

class ThreadPool;

struct StreamerOptions {
  int64_t batch_size = 16;
  int ring_slots = 3;  // host (and device) buffers in flight; >= 2 for any overlap
  Device device = Device::cpu;
};

// Writes image `index`'s preprocessed CHW floats (image_numel of them) to dst (host memory).
// Called from pool threads, several at once.
using PrepareImage = std::function<void(int64_t index, float* dst)>;
// Consumes images [first, first + count) as one [count, C, H, W] batch on the streamer's
// device. On CUDA, work must be queued on `compute`; the batch memory is reused once the work
// queued on `compute` so far has finished.
using ConsumeBatch =
    std::function<void(int64_t first, int64_t count, const float* batch, Stream compute)>;

class BatchStreamer {
 public:
  BatchStreamer(int64_t image_numel, const StreamerOptions& options, ThreadPool& pool);
  ~BatchStreamer();
  BatchStreamer(const BatchStreamer&) = delete;
  BatchStreamer& operator=(const BatchStreamer&) = delete;

  // Streams n_images through prepare and consume; returns when the last batch's work is done.
  // on_batch (optional) is called on the caller's thread after each batch is queued.
  void run(int64_t n_images, const PrepareImage& prepare, const ConsumeBatch& consume,
           const std::function<void(int64_t done)>& on_batch = {});

  // False when page-locking failed and the ring fell back to pageable memory.
  bool pinned() const;
  Stream compute_stream() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> m;
};

}  // namespace mirad
