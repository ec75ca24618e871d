// SoftPatch-style contamination protocol: move seeded-random defect images from the test split
// into the training set, and record exactly what moved in a manifest that reproduces the split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "host/dataset.h"

namespace mirad {

struct ContaminationOptions {
  // Defect images added = floor(ratio * |train| + 1e-9), |train| counted before contamination,
  // as SoftPatch does; the epsilon keeps 0.29 * 100 at 29 rather than 28.99999... -> 28.
  double ratio = 0.0;
  std::optional<std::size_t> count;  // an explicit number of defect images; overrides ratio
  uint64_t seed = 0;
  // false: moved images leave the test split (no image is both trained and evaluated on);
  // true: they stay in test as well, for comparisons with protocols that allow the overlap.
  bool overlap = false;
};

// What a contamination did, enough to redo it without the RNG. Paths are relative to the
// dataset root in the JSON, so a manifest still applies after the dataset moves.
struct ContaminationManifest {
  static constexpr int kSchemaVersion = 1;
  std::string layout;
  std::filesystem::path root;
  uint64_t seed = 0;
  double ratio = 0.0;
  std::optional<std::size_t> requested_count;
  bool overlap = false;
  std::size_t train_before = 0, test_before = 0;
  std::size_t defects_available = 0;  // defect images in the test split before moving
  std::size_t train_after = 0, test_after = 0;
  std::vector<Item> moved;  // sorted by path; full paths (root-joined) in memory
};

struct ContaminatedDataset {
  Dataset dataset;
  ContaminationManifest manifest;
};

// Number of defect images a ratio asks for (see ContaminationOptions::ratio).
std::size_t contamination_count(double ratio, std::size_t n_train);

// Draws the defect images and builds the contaminated split. InputError for a negative or
// non-finite ratio, or when the test split holds fewer defect images than requested.
ContaminatedDataset contaminate(const Dataset& clean, const ContaminationOptions& options);

// The contaminated split a manifest describes, built from the clean dataset. InputError when
// the manifest does not fit that dataset (other split sizes, or a moved path that is not a
// defect image of its test split).
Dataset apply_manifest(const Dataset& clean, const ContaminationManifest& manifest);

// Largest manifest read: ~1 million moved images at ~250 bytes each.
inline constexpr uint64_t kMaxManifestBytes = uint64_t(256) << 20;

// JSON, written atomically; InputError naming the file for a path, mask or defect type that is
// not valid UTF-8 (JSON cannot hold it), before anything is written. read_manifest: InputError
// naming the file and the field for a file that is not regular or is above kMaxManifestBytes,
// malformed or too deeply nested JSON, an unknown schema version, a missing or unknown key, a
// value of the wrong type (a seed or count must be an integer in [0, 2^64): -1, 1.5 and 2^64
// are refused, not wrapped), an unknown layout or sampler, a NUL byte in a string, a moved
// item not labelled defect, or counts that contradict each other or the list.
void write_manifest(const std::filesystem::path& path, const ContaminationManifest& manifest);
ContaminationManifest read_manifest(const std::filesystem::path& path);

// What `--check` does: re-draws the split from the manifest's seed, ratio (or requested count)
// and overlap on `clean`, and compares it with everything the manifest lists (counts, every
// moved path, defect type and mask). InputError naming the first field that differs, for a
// layout other than the dataset's, or for a root that names another existing folder (a root
// that no longer exists is accepted: the dataset may have moved, and paths are relative).
// Returns the re-drawn split, identical to what apply_manifest gives.
ContaminatedDataset check_manifest(const Dataset& clean, const ContaminationManifest& manifest);

// The RNG pieces, public so that their exact sequences can be pinned by tests: splits must
// not change when the standard library does. std::mt19937_64's output is fixed by the C++
// standard, but std::uniform_int_distribution and std::shuffle are not, so neither is used.
//
// Uniform in [0, bound) by rejection: draws below 2^64 mod bound are redrawn, which leaves an
// exact multiple of bound values and so no modulo bias.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound);
// k distinct indices from [0, n), in draw order: the first k steps of a Fisher-Yates shuffle
// of 0..n-1 (step i swaps position i with i + uniform_below(n - i)).
std::vector<std::size_t> sample_without_replacement(std::size_t n, std::size_t k, uint64_t seed);

}  // namespace mirad
