// BatchStreamer on a CUDA device: pinned ring, copy stream, compute stream, events.
#include <gtest/gtest.h>

#include "batch_streamer_test_util.h"
#include "host/batch_streamer.h"
#include "host/thread_pool.h"

using namespace mirad;
using mirad::test::check_stream;

TEST(CudaBatchStreamer, DeliversEveryImageInOrder) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  for (int ring : {1, 2, 3})
    for (int64_t n : {1, 7, 16, 33}) check_stream(Device::cuda, n, 8, ring);
}

TEST(CudaBatchStreamer, RingIsPinned) {
  if (!cuda_available()) GTEST_SKIP() << "no CUDA device";
  ThreadPool pool(2);
  StreamerOptions opt;
  opt.device = Device::cuda;
  BatchStreamer streamer(3 * 64 * 64, opt, pool);
  EXPECT_TRUE(streamer.pinned());
}
