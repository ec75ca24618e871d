// The benchmark generator's random numbers: xoshiro256** seeded by SplitMix64, with its own
// uniform and normal draws, plus seed derivation by hashing names.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

namespace mirad::synth {

// std::normal_distribution and friends are implementation-defined, so the same seed would give
// different datasets with libstdc++ and libc++. Everything here is spelled out instead.
class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (auto& s : m_state) s = splitmix64(seed);
  }

  uint64_t next() {
    const uint64_t result = rotl(m_state[1] * 5, 7) * 9;
    const uint64_t t = m_state[1] << 17;
    m_state[2] ^= m_state[0];
    m_state[3] ^= m_state[1];
    m_state[1] ^= m_state[2];
    m_state[0] ^= m_state[3];
    m_state[2] ^= t;
    m_state[3] = rotl(m_state[3], 45);
    return result;
  }
  // [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Inclusive range; the tiny modulo bias is irrelevant at the ranges used here.
  int uniform_int(int lo, int hi) {
    return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool bernoulli(double p) { return uniform() < p; }
  // Box-Muller; one value per call keeps the stream simple to reason about.
  double normal() {
    const double u1 = 1.0 - uniform();  // (0, 1]: log stays finite
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  double normal(double mean, double sigma) { return mean + sigma * normal(); }

  static uint64_t splitmix64(uint64_t& x) {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t m_state[4];
};

// Derives a child seed from a parent and a name (FNV-1a over the name, mixed by SplitMix64),
// so that every image's stream depends only on (seed, category, split, class, index) and not
// on the order in which threads reach it.
inline uint64_t derive_seed(uint64_t parent, std::string_view name) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : name) h = (h ^ c) * 0x100000001b3ull;
  uint64_t x = parent ^ h;
  return Rng::splitmix64(x);
}
inline uint64_t derive_seed(uint64_t parent, uint64_t index) {
  uint64_t x = parent ^ (index * 0xD1B54A32D192ED03ull + 0x632BE59BD9B4E019ull);
  return Rng::splitmix64(x);
}

}  // namespace mirad::synth
