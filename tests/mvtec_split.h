// An MVTec-like dataset split in memory, for tests of code that never opens the image files
// (the contamination protocol and its manifest writers).
#pragma once

#include <fmt/format.h>

#include <filesystem>
#include <initializer_list>
#include <string>

#include "host/dataset.h"

namespace mirad::test {

// Layout "mvtec" under `root`: 20 good training images; a test split holding, for each class
// of `classes` in order, 10 images of "good" or 5 of a defect type, each defect with its mask.
inline Dataset mvtec_split(const std::filesystem::path& root,
                           std::initializer_list<const char*> classes) {
  Dataset d;
  d.layout = "mvtec";
  d.root = root;
  for (int i = 0; i < 20; ++i)
    d.train.push_back(Item{root / fmt::format("train/good/{:03}.png", i), Label::good, "good", {}});
  for (const char* type : classes) {
    const bool good = std::string(type) == "good";
    for (int i = 0; i < (good ? 10 : 5); ++i) {
      Item it{root / fmt::format("test/{}/{:03}.png", type, i),
              good ? Label::good : Label::defect,
              type,
              {}};
      if (!good) it.mask_path = root / fmt::format("ground_truth/{}/{:03}_mask.png", type, i);
      d.test.push_back(std::move(it));
    }
  }
  return d;
}

}  // namespace mirad::test
