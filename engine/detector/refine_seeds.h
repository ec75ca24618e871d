// The seeds of refinement's models, in one place: every model's episodes are drawn from
// mix_seed(config seed, tag, tap, 1), so a tag decides a model's bits. The values are the ones
// models have always been trained with; changing one changes every result that uses it.
#pragma once

#include <cstdint>

namespace mirad {

// A 64-bit mix of the seed and three tags (SplitMix64's finaliser over a multiplicative xor).
inline uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t z = seed ^ (a * 0x9e3779b97f4a7c15ULL) ^ (b * 0xc2b2ae3d27d4eb4fULL) ^
               (c * 0x165667b19e3779f9ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Round r's model for fold k (k = 0 without cross-fit): r * 1000 + k, so no two rounds or folds
// share episodes (folds <= 64 < 1000).
inline uint64_t round_seed_tag(int round, int fold) { return uint64_t(round) * 1000 + uint64_t(fold); }
// The shipped detector, trained after the rounds on the final retained set.
inline constexpr uint64_t kFinalModelSeedTag = 999999;
// The baseline: every pool image, no rejection.
inline constexpr uint64_t kBaselineSeedTag = 777777;
// The permutation that deals images to cross-fit folds.
inline constexpr uint64_t kFoldSeedTag = 0xf01d;

}  // namespace mirad
