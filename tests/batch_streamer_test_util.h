// Shared by the CPU and CUDA streamer tests: every image must arrive once, in order, intact.
#pragma once

#include <gtest/gtest.h>

#include <vector>

#include "core/buffer.h"
#include "host/batch_streamer.h"
#include "host/thread_pool.h"

namespace mirad::test {

inline void check_stream(Device dev, int64_t n_images, int64_t batch, int ring) {
  ThreadPool pool(2);
  const int64_t numel = 3 * 5 * 4;
  StreamerOptions opt;
  opt.batch_size = batch, opt.ring_slots = ring, opt.device = dev;
  BatchStreamer streamer(numel, opt, pool);
  std::vector<int64_t> seen;
  int64_t last_progress = 0;
  streamer.run(
      n_images,
      [&](int64_t index, float* dst) {
        for (int64_t k = 0; k < numel; ++k) dst[k] = float(index * 1000 + k);
      },
      [&](int64_t first, int64_t count, const float* data, Stream s) {
        std::vector<float> h(count * numel);
        mem::copy(h.data(), Device::cpu, data, dev, h.size() * sizeof(float), s);
        mem::synchronize(s);
        EXPECT_LE(count, batch);
        for (int64_t i = 0; i < count; ++i) {
          seen.push_back(first + i);
          for (int64_t k = 0; k < numel; ++k)
            ASSERT_EQ(h[i * numel + k], float((first + i) * 1000 + k)) << "image " << first + i;
        }
      },
      [&](int64_t done) {
        EXPECT_GT(done, last_progress);
        last_progress = done;
      });
  ASSERT_EQ(int64_t(seen.size()), n_images);
  for (int64_t i = 0; i < n_images; ++i) EXPECT_EQ(seen[i], i);
  EXPECT_EQ(last_progress, n_images);
}

}  // namespace mirad::test
