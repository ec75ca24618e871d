// CPU tests of the feature layout ops (kernels/patch_ops.h): transpose by hand and against
// naive loops, the training-batch gather with its index validation, and the repeated table.
// Suite names start with 'patch_ops' so that `ctest -R patch_ops` selects them.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "expect_error.h"
#include "kernels/patch_ops.h"

namespace mirad {
namespace {

std::vector<float> iota_floats(int64_t count, float start = 0) {
  std::vector<float> v(count);
  std::iota(v.begin(), v.end(), start);
  return v;
}

TEST(patch_ops, ChwToRowsByHand) {
  // One image, C = 2, HW = 3: [[0 1 2], [3 4 5]] -> rows [0 3], [1 4], [2 5].
  std::vector<float> out(6, -1);
  const auto in = iota_floats(6);
  patchops::chw_to_rows(1, 2, 3, in.data(), out.data(), Device::cpu);
  EXPECT_EQ(out, (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(patch_ops, ChwToRowsMatchesNaiveLoops) {
  // Odd sizes around the 32-channel block of the CPU loop.
  for (auto [n, C, HW] : {std::tuple<int64_t, int64_t, int64_t>{3, 33, 17},
                          {1, 1, 1},
                          {2, 96, 784},
                          {1, 31, 65},
                          {4, 64, 1}}) {
    const auto in = iota_floats(n * C * HW, 0.5f);
    std::vector<float> out(in.size(), -1);
    patchops::chw_to_rows(n, C, HW, in.data(), out.data(), Device::cpu);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t p = 0; p < HW; ++p)
          ASSERT_EQ(out[(i * HW + p) * C + c], in[(i * C + c) * HW + p])
              << n << " " << C << " " << HW << " at " << i << "," << c << "," << p;
  }
}

TEST(patch_ops, GatherRowsWithCondition) {
  // 2 images of HW = 3 positions, C = 2 features; table P is [3, 4].
  const int64_t C = 2, HW = 3, Cc = 4, n_rows = 6;
  const auto X = iota_floats(n_rows * C);      // row r = [2r, 2r+1]
  const auto P = iota_floats(HW * Cc, 100.f);  // row p = [100+4p .. 103+4p]
  const std::vector<int64_t> idx = {5, 0, 3, 3, 1};
  const int64_t m = int64_t(idx.size());
  std::vector<float> out_x(m * C, -1), out_c(m * Cc, -1);
  patchops::gather_rows(m, idx.data(), X.data(), C, n_rows, P.data(), HW, Cc, out_x.data(),
                        out_c.data(), Device::cpu);
  for (int64_t j = 0; j < m; ++j) {
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(out_x[j * C + c], float(2 * idx[j] + c)) << j;
    const int64_t p = idx[j] % HW;  // 5 -> 2, 0 -> 0, 3 -> 0, 1 -> 1
    for (int64_t c = 0; c < Cc; ++c) EXPECT_EQ(out_c[j * Cc + c], 100.f + 4 * p + c) << j;
  }
  // Without a condition output, P is not used at all (null, with meaningless sizes).
  std::vector<float> only_x(m * C, -1);
  patchops::gather_rows(m, idx.data(), X.data(), C, n_rows, nullptr, 0, 0, only_x.data(), nullptr,
                        Device::cpu);
  EXPECT_EQ(only_x, out_x);
}

TEST(patch_ops, GatherRejectsBadIndicesBeforeWriting) {
  const auto X = iota_floats(8 * 3);
  const auto P = iota_floats(4 * 2);
  std::vector<float> out_x(3 * 3, -1), out_c(3 * 2, -1);
  for (int64_t bad : {int64_t(-1), int64_t(8), int64_t(1) << 40}) {
    const std::vector<int64_t> idx = {2, bad, 1};
    test::expect_input_error(
        [&] {
          patchops::gather_rows(3, idx.data(), X.data(), 3, 8, P.data(), 4, 2, out_x.data(),
                                out_c.data(), Device::cpu);
        },
        "outside [0, 8)", "entry 1");
    // Row 0 (a valid index before the bad one) was not written either.
    for (float v : out_x) ASSERT_EQ(v, -1.f);
    for (float v : out_c) ASSERT_EQ(v, -1.f);
  }
  // The counting overload behaves the same on the CPU: it throws and leaves the count alone.
  unsigned long long count = 7;
  const std::vector<int64_t> idx = {9};
  test::expect_input_error(
      [&] {
        patchops::gather_rows(1, idx.data(), X.data(), 3, 8, P.data(), 4, 2, out_x.data(),
                              out_c.data(), &count, Device::cpu);
      },
      "outside");
  EXPECT_EQ(count, 7u);
}

TEST(patch_ops, RepeatRows) {
  const auto P = iota_floats(3 * 2, 1);
  std::vector<float> out(4 * 6 + 1, -1);  // one sentinel past the end
  patchops::repeat_rows(4, 3, 2, P.data(), out.data(), Device::cpu);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t e = 0; e < 6; ++e) ASSERT_EQ(out[i * 6 + e], P[e]) << i << " " << e;
  EXPECT_EQ(out.back(), -1.f);
}

TEST(patch_ops, GatherOfRepeatedTableIsConsistent) {
  // The gathered condition must equal the repeated table at the gathered rows: the two paths
  // (whole images and sampled batches) give every row the same condition.
  const int64_t n = 3, HW = 7, Cc = 5, C = 2;
  std::mt19937_64 rng(3);
  const auto P = iota_floats(HW * Cc, -10);
  std::vector<float> repeated(n * HW * Cc);
  patchops::repeat_rows(n, HW, Cc, P.data(), repeated.data(), Device::cpu);
  const auto X = iota_floats(n * HW * C);
  std::uniform_int_distribution<int64_t> pick(0, n * HW - 1);
  std::vector<int64_t> idx(17);
  for (auto& i : idx) i = pick(rng);
  std::vector<float> out_x(idx.size() * C), out_c(idx.size() * Cc);
  patchops::gather_rows(int64_t(idx.size()), idx.data(), X.data(), C, n * HW, P.data(), HW, Cc,
                        out_x.data(), out_c.data(), Device::cpu);
  for (size_t j = 0; j < idx.size(); ++j)
    for (int64_t c = 0; c < Cc; ++c) ASSERT_EQ(out_c[j * Cc + c], repeated[idx[j] * Cc + c]) << j;
}

TEST(patch_ops, BadArgumentsRejected) {
  std::vector<float> a(64, 1), b(64, 0);
  const std::vector<int64_t> idx = {0, 1};
  using test::expect_input_error;
  expect_input_error([&] { patchops::chw_to_rows(1, 0, 4, a.data(), b.data(), Device::cpu); },
                     "empty");
  expect_input_error([&] { patchops::chw_to_rows(-1, 2, 4, a.data(), b.data(), Device::cpu); },
                     "negative");
  expect_input_error([&] { patchops::chw_to_rows(1, 4, 4, a.data(), a.data(), Device::cpu); },
                     "overlap");
  expect_input_error([&] { patchops::chw_to_rows(1, 4, 4, nullptr, b.data(), Device::cpu); },
                     "null");
  expect_input_error(
      [&] {
        patchops::chw_to_rows(int64_t(1) << 40, int64_t(1) << 20, 8, a.data(), b.data(),
                              Device::cpu);
      },
      "overflow");
  // The feature rows must be whole images when a condition is gathered.
  expect_input_error(
      [&] {
        patchops::gather_rows(2, idx.data(), a.data(), 2, 7, a.data(), 3, 2, b.data(), b.data() + 8,
                              Device::cpu);
      },
      "whole images");
  expect_input_error(
      [&] {
        patchops::gather_rows(2, idx.data(), a.data(), 2, 6, nullptr, 3, 2, b.data(), b.data() + 8,
                              Device::cpu);
      },
      "without a table");
  expect_input_error(
      [&] {
        patchops::gather_rows(2, idx.data(), a.data(), 2, 6, a.data(), 3, 2, b.data(), b.data() + 2,
                              Device::cpu);
      },
      "overlap");
  expect_input_error(
      [&] {
        patchops::gather_rows(2, idx.data(), a.data(), 0, 6, nullptr, 0, 0, b.data(), nullptr,
                              Device::cpu);
      },
      "non-empty");
  expect_input_error(
      [&] {
        patchops::gather_rows(2, idx.data(), a.data(), 2, 6, a.data(), 3, 2, b.data(), b.data() + 8,
                              nullptr, Device::cpu);
      },
      "null invalid-index counter");
  expect_input_error([&] { patchops::repeat_rows(2, 3, 0, a.data(), b.data(), Device::cpu); },
                     "empty");
  expect_input_error([&] { patchops::repeat_rows(2, 3, 2, a.data(), a.data() + 4, Device::cpu); },
                     "overlap");
  if (!cuda_compiled())
    expect_input_error([&] { patchops::repeat_rows(2, 3, 2, a.data(), b.data(), Device::cuda); },
                       "no CUDA");
  // m == 0 and n == 0 are no-ops, null pointers included.
  patchops::gather_rows(0, nullptr, nullptr, 2, 6, nullptr, 3, 2, nullptr, nullptr, Device::cpu);
  patchops::repeat_rows(0, 3, 2, nullptr, nullptr, Device::cpu);
  patchops::chw_to_rows(0, 3, 2, nullptr, nullptr, Device::cpu);
}

}  // namespace
}  // namespace mirad
