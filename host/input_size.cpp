// Choosing the backbone input size from the images' headers.
#include "host/input_size.h"

#include <cmath>
#include <map>

#include "core/error.h"
#include "host/image.h"

namespace mirad {

namespace fs = std::filesystem;

InputSize choose_input_size(const std::vector<fs::path>& images, int64_t short_side) {
  CHECK_INPUT(!images.empty(), "no images");
  std::map<std::pair<int, int>, int64_t> count;  // (height, width) -> images
  for (const auto& p : images) {
    try {
      const ImageInfo info = read_image_info(p);
      ++count[{info.height, info.width}];
    } catch (const InputError&) {
      // Unreadable headers are reported (or fatal under --strict) when decoding.
    }
  }
  std::pair<int, int> best{int(short_side), int(short_side)};
  int64_t best_n = 0;
  for (const auto& [hw, n] : count)
    if (n > best_n) best = hw, best_n = n;
  InputSize s;
  const double h = best.first, w = best.second;
  if (h <= w) {
    s.height = int(short_side);
    s.width = int(std::lround(double(short_side) * w / h));
  } else {
    s.width = int(short_side);
    s.height = int(std::lround(double(short_side) * h / w));
  }
  CHECK_INPUT(s.height <= 4096 && s.width <= 4096,
              "input size {} x {} (short side {} at aspect {}:{}) exceeds 4096 px", s.height,
              s.width, short_side, best.second, best.first);
  return s;
}

}  // namespace mirad
