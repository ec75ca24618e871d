// Where ../shared (reference weights and photos) is: MIRAD_SHARED if set, else beside the
// checkout. The checkout is MIRAD_SOURCE_DIR, which CMake defines for every test program:
// __FILE__ would do only while the compiler sees absolute paths, and a compiler cache with a
// base folder (ccache's CCACHE_BASEDIR) rewrites them to relative ones.
#pragma once

#include <cstdlib>
#include <filesystem>

namespace mirad::test {

inline std::filesystem::path source_root() { return MIRAD_SOURCE_DIR; }

inline std::filesystem::path shared_root() {
  if (const char* env = std::getenv("MIRAD_SHARED"); env && *env) return env;
  return source_root().parent_path() / "shared";
}

// The reference MobileNetV2 (graph.json + weights.safetensors), when ../shared has it.
inline std::filesystem::path mobilenet_v2_dir() {
  return shared_root() / "weights" / "mobilenet_v2_imagenet";
}

// The reference photos (chelsea.png and others), when ../shared has them.
inline std::filesystem::path imagenet_photos_dir() {
  return shared_root() / "fixtures" / "imagenet";
}

}  // namespace mirad::test
