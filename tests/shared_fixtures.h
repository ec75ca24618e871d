// Where ../shared (reference weights and photos) is: MIRAD_SHARED if set, else beside the
// checkout, found from this file's path since ctest runs tests from the build folder.
#pragma once

#include <cstdlib>
#include <filesystem>

namespace mirad::test {

inline std::filesystem::path shared_root() {
  if (const char* env = std::getenv("MIRAD_SHARED"); env && *env) return env;
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "shared";
}

// The reference MobileNetV2 (graph.json + weights.safetensors), when ../shared has it.
inline std::filesystem::path mobilenet_v2_dir() {
  return shared_root() / "weights" / "mobilenet_v2_imagenet";
}

inline std::filesystem::path source_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path();
}

}  // namespace mirad::test
