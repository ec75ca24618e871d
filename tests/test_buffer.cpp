// Buffers and views: move-only ownership, copies spelled out, views sharing storage.
#include <gtest/gtest.h>

#include <type_traits>

#include "core/buffer.h"
#include "core/device.h"
#include "core/error.h"

using namespace mirad;

static_assert(!std::is_copy_constructible_v<Buffer<float>>, "a copy must be spelled out");
static_assert(!std::is_copy_assignable_v<Buffer<float>>);
static_assert(std::is_nothrow_move_constructible_v<Buffer<float>>);

TEST(Buffer, MoveTransfersOwnership) {
  Buffer<float> a(5, Device::cpu);
  float* p = a.data();
  Buffer<float> b(std::move(a));
  EXPECT_EQ(b.data(), p);
  EXPECT_EQ(b.size(), 5u);
  EXPECT_EQ(a.data(), nullptr);
  EXPECT_EQ(a.size(), 0u);
  Buffer<float> c(3, Device::cpu);
  c = std::move(b);
  EXPECT_EQ(c.data(), p);
  EXPECT_EQ(c.size(), 5u);
}

TEST(Buffer, RoundTripAndCopyFrom) {
  std::vector<double> h = {1.5, -2, 3.25, 0, 7};
  auto b = Buffer<double>::from_host(h, Device::cpu);
  EXPECT_EQ(b.to_host(), h);
  Buffer<double> c(5, Device::cpu);
  c.copy_from(b);
  EXPECT_EQ(c.to_host(), h);
  c.zero();
  EXPECT_EQ(c.to_host(), std::vector<double>(5, 0.0));
  Buffer<double> wrong(4, Device::cpu);
  EXPECT_THROW(wrong.copy_from(b), std::runtime_error);
}

TEST(Buffer, ReserveDiscardOnlyGrows) {
  Buffer<int> b(8, Device::cpu);
  int* p = b.data();
  b.reserve_discard(4);
  EXPECT_EQ(b.data(), p);
  b.reserve_discard(16);
  EXPECT_EQ(b.size(), 16u);
}

TEST(MatrixView, SlicesShareStorage) {
  std::vector<float> m = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  MatrixView<float> v(m.data(), 3, 4);
  auto s = v.col_slice(1, 2);
  EXPECT_EQ(s.rows, 3);
  EXPECT_EQ(s.cols, 2);
  EXPECT_EQ(s.ld, 4);
  EXPECT_FALSE(s.contiguous());
  EXPECT_EQ(s.row(2)[1], 10.f);
  s.row(1)[0] = -1;
  EXPECT_EQ(m[5], -1.f);
}

TEST(Device, ParseNamesAndRejectsUnknown) {
  EXPECT_EQ(parse_device("cpu"), Device::cpu);
  EXPECT_THROW(parse_device("tpu"), InputError);
  if (!cuda_available()) EXPECT_THROW(parse_device("cuda"), InputError);
}

TEST(CudaBufferWithoutDevice, AllocationFailsCleanly) {
  if (cuda_available()) GTEST_SKIP() << "a device is present";
  EXPECT_THROW(Buffer<float>(16, Device::cuda), std::runtime_error);
}
