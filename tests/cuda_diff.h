// Differential-test harness for the CUDA ops (ggml's test-backend-ops, llm.c's validate_result):
// sentinel-guarded buffers that catch out-of-bounds writes, and the error measures by which
// tests compare a CUDA result with its CPU reference. Nothing here needs a device, so
// tests/test_cuda_diff.cpp checks the harness itself on the CPU.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "core/buffer.h"

namespace mirad::test {

// Guard values: not 0, 1 or any value an op under test plausibly writes, so that a stray
// write shows.
template <class T>
constexpr T default_sentinel() {
  if constexpr (std::is_floating_point_v<T>)
    return T(-7.25);
  else
    return T(0xbeef);  // 16-bit storage of FP16 / BF16 values: a plain number, no NaN
}

// n elements on `dev` in the middle of an allocation with Pad sentinels on each side; data()
// is the middle. Pad is odd by convention, so that a misaligned write past the end lands on a
// guard too. The body starts as `init` (possibly shorter than n); the rest of it, like the
// guards, holds the sentinel, so an output the op forgets to write differs from any result.
template <class T, int64_t Pad>
class Guarded {
 public:
  static constexpr int64_t kPad = Pad;

  Guarded(int64_t n, const std::vector<T>& init, T sentinel = default_sentinel<T>(),
          Device dev = Device::cuda)
      : m_n(n), m_sentinel(sentinel), m_buf(Buffer<T>::from_host(framed(n, init, sentinel), dev)) {}
  explicit Guarded(int64_t n) : Guarded(n, {}) {}
  explicit Guarded(const std::vector<T>& init) : Guarded(int64_t(init.size()), init) {}

  T* data() { return m_buf.data() + Pad; }
  const T* data() const { return m_buf.data() + Pad; }
  int64_t size() const { return m_n; }

  // Positions of guard elements that changed, relative to the body's start (negative: before
  // it; n and up: after it). Compared bitwise, so a NaN sentinel works too.
  std::vector<int64_t> changed_guards() const { return changed(m_buf.to_host()); }

  // The body, after a failure per changed guard element (the first few, then their count).
  std::vector<T> body(const std::string& what) const {
    const std::vector<T> all = m_buf.to_host();
    const std::vector<int64_t> bad = changed(all);
    for (size_t k = 0; k < bad.size() && k < 5; ++k)
      ADD_FAILURE() << what << ": write " << (bad[k] < 0 ? "before" : "after") << " the output at "
                    << (bad[k] < 0 ? bad[k] : bad[k] - m_n);
    EXPECT_EQ(bad.size(), 0u) << what << ": " << bad.size() << " guard element(s) changed";
    return std::vector<T>(all.begin() + Pad, all.begin() + Pad + m_n);
  }

 private:
  static std::vector<T> framed(int64_t n, const std::vector<T>& init, T sentinel) {
    std::vector<T> all(size_t(n + 2 * Pad), sentinel);
    std::copy(init.begin(), init.end(), all.begin() + Pad);
    return all;
  }
  std::vector<int64_t> changed(const std::vector<T>& all) const {
    std::vector<int64_t> out;
    auto differs = [&](int64_t i) { return std::memcmp(&all[size_t(i)], &m_sentinel, sizeof(T)) != 0; };
    for (int64_t i = 0; i < Pad; ++i)
      if (differs(i)) out.push_back(i - Pad);
    for (int64_t i = 0; i < Pad; ++i)
      if (differs(Pad + m_n + i)) out.push_back(m_n + i);
    return out;
  }

  int64_t m_n;
  T m_sentinel;
  Buffer<T> m_buf;
};

// count floats drawn uniformly from [lo, hi) by a seeded generator: the same inputs on every
// run and every machine, so a failure reproduces.
inline std::vector<float> uniform_values(int64_t count, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = dist(rng);
  return v;
}

// Relative L2 error ||got - want|| / ||want|| in double (the square root of ggml's NMSE): one
// number for a whole output, insensitive to where rounding happened to land. Outputs of
// different sizes are infinitely far apart, so that no bound passes them.
template <class A, class B>
double normalised_error(const std::vector<A>& got, const std::vector<B>& want) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

// Max-norm error max |got - want| / (max |want| + 1e-6), and where it is largest: for outputs
// whose entries should each be right, not just on average. Non-finite pairs are left out; the
// caller counts them (a NaN would otherwise hide in a max).
struct MaxError {
  double max_err = 0, max_ref = 0;
  int64_t worst = -1;  // index of max_err, -1 when every pair matched exactly
  double normalised() const { return max_err / (max_ref + 1e-6); }
};
inline void accumulate_max_error(MaxError& e, double got, double want, int64_t index) {
  if (!std::isfinite(got) || !std::isfinite(want)) return;
  e.max_ref = std::max(e.max_ref, std::abs(want));
  if (std::abs(want - got) > e.max_err) e.max_err = std::abs(want - got), e.worst = index;
}

// Entry-by-entry check: |got[i] - want[i]| <= tol(i) for every finite want[i]. A non-finite
// want[i] fails unless match_nonfinite, which asks for the same value instead (NaN for NaN,
// the same infinity). Reports the first few mismatches; returns how many there were.
template <class A, class B, class Tol>
int64_t expect_each_close(const std::vector<A>& got, const std::vector<B>& want, Tol&& tol,
                          const std::string& what, bool match_nonfinite = false) {
  EXPECT_EQ(got.size(), want.size()) << what;
  if (got.size() != want.size()) return 1;
  int64_t bad = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = double(got[i]), w = double(want[i]);
    bool ok;
    if (std::isfinite(w))
      ok = std::abs(g - w) <= double(tol(i));  // false for a NaN g, too
    else
      ok = match_nonfinite && (std::isnan(w) ? std::isnan(g) : g == w);
    if (!ok && bad++ < 5)
      ADD_FAILURE() << what << " at " << i << ": cuda " << got[i] << " cpu " << want[i]
                    << " (tolerance " << double(tol(i)) << ")";
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " entries differ";
  return bad;
}

}  // namespace mirad::test
