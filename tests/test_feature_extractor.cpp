// FeatureExtractor end to end on a small generated backbone and generated images: every
// image's cached features equal the backbone run on that image alone, smoothed by a naive
// 3x3 mean; batching, the ring and the decode pool must not change a single value.
#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "engine/backbone/backbone.h"
#include "core/error.h"
#include "engine/io/safetensors.h"
#include "host/feature_extractor.h"
#include "host/image.h"
#include "host/resize.h"
#include "feature_extractor_test_util.h"
#include "temp_dir.h"

using namespace mirad;
namespace fs = std::filesystem;

using namespace mirad::test;


TEST(FeatureExtractor, CachedFeaturesEqualPerImageBackbonePlusSmoothing) {
  check_extractor(Device::cpu);
}

TEST(FeatureExtractor, CollectImagesWalksDirectoriesAndRejectsMissing) {
  test::TempDir tmp("mirad_collect");
  auto imgs = write_images(tmp / "d" / "sub", 3);
  std::ofstream(tmp / "d" / "notes.txt") << "not an image";
  auto found = collect_images({tmp / "d"});
  EXPECT_EQ(found, imgs);
  EXPECT_THROW(collect_images({tmp / "missing"}), InputError);
  fs::create_directories(tmp / "empty");
  EXPECT_THROW(collect_images({tmp / "empty"}), InputError);
}

TEST(FeatureExtractor, UnknownTapAndCorruptImageAreClearErrors) {
  test::TempDir tmp("mirad_extract_bad");
  write_backbone(tmp / "bb");
  FeatureExtractorOptions opt;
  opt.taps = {"stride99"};
  EXPECT_THROW(FeatureExtractor(tmp / "bb", Device::cpu, opt), InputError);
  opt.taps = {"a"};
  FeatureExtractor fx(tmp / "bb", Device::cpu, opt);
  auto images = write_images(tmp / "imgs", 2);
  std::ofstream(tmp / "imgs" / "broken.png") << "\x89PNG\r\n\x1a\n garbage";
  images.push_back(tmp / "imgs" / "broken.png");
  try {
    fx.extract(images);
    FAIL() << "a corrupt image was accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("broken.png"), std::string::npos) << e.what();
  }
}
