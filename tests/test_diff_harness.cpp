// The CUDA differential-test harness (tests/cuda_diff.h) checked on the CPU, so that CI, which
// has no GPU, still proves that it catches what the CUDA tests rely on it to catch.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda_diff.h"

namespace mirad::test {
namespace {

using HostGuarded = Guarded<float, 7>;

// The failures f reports, captured instead of failing this test (gtest's own
// EXPECT_NONFATAL_FAILURE wants exactly one, and the harness reports several).
template <class F>
std::vector<std::string> failures_of(F&& f) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    f();
  }
  std::vector<std::string> out;
  for (int i = 0; i < results.size(); ++i) out.push_back(results.GetTestPartResult(i).message());
  return out;
}

bool mentions(const std::vector<std::string>& failures, const std::string& text) {
  for (const auto& f : failures)
    if (f.find(text) != std::string::npos) return true;
  return false;
}

HostGuarded on_host(const std::vector<float>& init) {
  return HostGuarded(int64_t(init.size()), init, default_sentinel<float>(), Device::cpu);
}

TEST(DiffHarness, IntactGuardsPassAndTheBodyComesBack) {
  HostGuarded g = on_host({1.f, 2.f, 3.f});
  g.data()[1] = 5.f;  // inside the body: allowed
  EXPECT_TRUE(g.changed_guards().empty());
  EXPECT_EQ(g.body("intact"), (std::vector<float>{1.f, 5.f, 3.f}));
}

TEST(DiffHarness, WritesJustOutsideTheBodyAreCaught) {
  HostGuarded g = on_host({1.f, 2.f, 3.f});
  g.data()[-1] = 0.f;  // the guard elements are part of the same allocation
  g.data()[3] = 0.f;
  g.data()[3 + HostGuarded::kPad - 1] = 0.f;  // the last guard element
  EXPECT_EQ(g.changed_guards(), (std::vector<int64_t>{-1, 3, 3 + HostGuarded::kPad - 1}));
  const auto failures = failures_of([&] { g.body("overrun"); });
  EXPECT_EQ(failures.size(), 4u);  // one per changed element, then the count
  EXPECT_TRUE(mentions(failures, "overrun: write before the output at -1"));
  EXPECT_TRUE(mentions(failures, "overrun: write after the output at 0"));
  EXPECT_TRUE(mentions(failures, "overrun: 3 guard element(s) changed"));
}

TEST(DiffHarness, NanSentinelsAreComparedBitwise) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Guarded<float, 3> g(2, {}, nan, Device::cpu);
  EXPECT_TRUE(g.changed_guards().empty());  // NaN != NaN, but the bits are the same
  g.data()[2] = 1.f;
  EXPECT_EQ(g.changed_guards(), (std::vector<int64_t>{2}));
}

TEST(DiffHarness, UnwrittenOutputsHoldTheSentinel) {
  Guarded<uint16_t, 5> g(4, {}, default_sentinel<uint16_t>(), Device::cpu);
  EXPECT_EQ(g.body("unwritten"), std::vector<uint16_t>(4, 0xbeef));
  Guarded<float, 5> partial(3, {9.f}, default_sentinel<float>(), Device::cpu);
  EXPECT_EQ(partial.body("prefix"), (std::vector<float>{9.f, -7.25f, -7.25f}));
}

TEST(DiffHarness, NormalisedErrorOfKnownArrays) {
  // ||(3, 1) - (3, 4)|| / ||(3, 4)|| = 3 / 5.
  EXPECT_DOUBLE_EQ(normalised_error(std::vector<float>{3, 1}, std::vector<double>{3, 4}), 0.6);
  EXPECT_DOUBLE_EQ(normalised_error(std::vector<float>{0, 0}, std::vector<float>{3, 4}), 1.0);
  EXPECT_EQ(normalised_error(std::vector<float>{3, 4}, std::vector<float>{3, 4}), 0.0);
  EXPECT_GT(normalised_error(std::vector<float>{1e-20f}, std::vector<float>{0}), 1e200);
  EXPECT_EQ(normalised_error(std::vector<float>{3}, std::vector<float>{3, 4}),
            std::numeric_limits<double>::infinity());
}

TEST(DiffHarness, MaxErrorOfKnownArrays) {
  const std::vector<double> want{3, -4, 1, INFINITY}, got{3, -3.5, 1.25, 0};
  MaxError e;
  for (size_t i = 0; i < want.size(); ++i) accumulate_max_error(e, got[i], want[i], int64_t(i));
  EXPECT_EQ(e.max_err, 0.5);  // the infinite pair is left out
  EXPECT_EQ(e.max_ref, 4.0);
  EXPECT_EQ(e.worst, 1);
  EXPECT_DOUBLE_EQ(e.normalised(), 0.5 / (4 + 1e-6));
}

TEST(DiffHarness, EachCloseCountsEveryMismatch) {
  const std::vector<float> want{1, 2, 3, NAN, INFINITY};
  auto tol = [](size_t) { return 0.1; };
  EXPECT_EQ(expect_each_close(std::vector<float>{1.05f, 2, 3, NAN, INFINITY}, want, tol, "ok", true),
            0);
  int64_t bad = 0;
  auto failures = failures_of([&] {
    bad = expect_each_close(std::vector<float>{1.2f, NAN, 3, 0, -INFINITY}, want, tol, "bad", true);
  });
  EXPECT_EQ(bad, 4);
  EXPECT_EQ(failures.size(), 5u);
  EXPECT_TRUE(mentions(failures, "bad: 4 of 5 entries differ"));
  // Without match_nonfinite a non-finite reference always fails: it means the test's inputs
  // were out of range.
  failures = failures_of([&] {
    bad = expect_each_close(std::vector<float>{1, 2, 3, NAN, INFINITY}, want, tol, "strict");
  });
  EXPECT_EQ(bad, 2);
  EXPECT_TRUE(mentions(failures, "strict: 2 of 5 entries differ"));
  // A size mismatch is a failure too, not a silent pass over the common prefix.
  failures = failures_of([&] { bad = expect_each_close(std::vector<float>{1}, want, tol, "size"); });
  EXPECT_EQ(bad, 1);
  EXPECT_FALSE(failures.empty());
}

}  // namespace
}  // namespace mirad::test
