// BatchStreamer on the CPU: every image arrives once, in order, in the right batch; decode
// errors propagate; ring sizes 1..4 and ragged last batches.
#include <gtest/gtest.h>

#include "core/error.h"
#include "host/batch_streamer.h"
#include "host/thread_pool.h"
#include "batch_streamer_test_util.h"

using namespace mirad;

using mirad::test::check_stream;

TEST(BatchStreamer, DeliversEveryImageInOrder) {
  for (int ring : {1, 2, 3, 4})
    for (int64_t n : {1, 7, 16, 33}) check_stream(Device::cpu, n, 8, ring);
}

TEST(BatchStreamer, DecodeErrorsPropagate) {
  ThreadPool pool(2);
  StreamerOptions opt;
  opt.batch_size = 4;
  BatchStreamer streamer(10, opt, pool);
  EXPECT_THROW(streamer.run(
                   12,
                   [](int64_t index, float*) {
                     if (index == 9) throw InputError("bad.png: truncated");
                   },
                   [](int64_t, int64_t, const float*, Stream) {}),
               InputError);
}

TEST(BatchStreamer, RejectsBadOptions) {
  ThreadPool pool(1);
  StreamerOptions opt;
  opt.batch_size = 0;
  EXPECT_THROW(BatchStreamer(10, opt, pool), InputError);
  opt.batch_size = 2, opt.ring_slots = 0;
  EXPECT_THROW(BatchStreamer(10, opt, pool), InputError);
  opt.ring_slots = 2;
  EXPECT_THROW(BatchStreamer(0, opt, pool), InputError);
}
