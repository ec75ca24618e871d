// The backbone input size of a job: chosen from its images' headers so aspect ratios are kept.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace mirad {

struct InputSize {
  int height = 0, width = 0;
};
// The backbone input for a set of images: the most common aspect ratio among them (headers
// only), short side `short_side`, long side rounded to keep the ratio (a 230 x 630 KSDD2 image
// becomes 256 x 701, not a square). Images of another aspect ratio are resized to it.
InputSize choose_input_size(const std::vector<std::filesystem::path>& images, int64_t short_side);

}  // namespace mirad
