// The reference MobileNetV2 (../shared/weights/mobilenet_v2_imagenet) on the CPU backend: the
// three fixture photos, preprocessed as its expected.json says, must give the expected top-1
// classes and tap statistics (shape, mean, std at ops 9, 20, 46) within 1e-3 relative.
// Skips with a message when ../shared is absent (a fresh clone without fixtures).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backbone/backbone.h"
#include "host/image.h"
#include "host/resize.h"
#include "shared_fixtures.h"

namespace fs = std::filesystem;

namespace mirad {
namespace {

using mirad::test::shared_root;

struct Fixture {
  fs::path model, photos;
  nlohmann::json expected;
};

// Empty model path when the shared weights are absent.
Fixture load_fixture() {
  Fixture f;
  const fs::path root = shared_root();
  f.model = root / "weights" / "mobilenet_v2_imagenet";
  f.photos = root / "fixtures" / "imagenet";
  if (!fs::exists(f.model / "expected.json") || !fs::exists(f.photos)) return {};
  std::ifstream in(f.model / "expected.json");
  f.expected = nlohmann::json::parse(in);
  return f;
}

// expected.json: decode to 8-bit RGB, PIL bilinear resize to 224x224, (u8 - 128) / 128, NCHW.
std::vector<float> preprocess_photo(const fs::path& file) {
  PreprocessOptions opt;
  opt.resize_height = opt.resize_width = 224;
  opt.norm = normalization_preset("tf_inception");
  return preprocess(decode_image(file), opt);
}

struct Stats {
  double mean, std;
};
Stats stats(const float* x, int64_t n) {
  double s = 0, ss = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double mean = s / n;
  for (int64_t i = 0; i < n; ++i) ss += (x[i] - mean) * (x[i] - mean);
  return {mean, std::sqrt(ss / n)};  // population std, as numpy's default
}

TEST(backbone_mobilenet, TopOneAndTapStatisticsMatchExpected) {
  const Fixture f = load_fixture();
  if (f.model.empty())
    GTEST_SKIP() << "no MobileNetV2 weights or fixture photos under " << shared_root()
                 << " (set MIRAD_SHARED to the shared folder)";
  Backbone bb(f.model, Device::cpu);
  const auto& results = f.expected.at("results");
  const int64_t N = static_cast<int64_t>(results.size());
  ASSERT_EQ(N, 3);

  // All photos in one batch: batch items must not influence each other.
  std::vector<float> batch;
  for (const auto& r : results) {
    const std::vector<float> x = preprocess_photo(f.photos / r.at("image").get<std::string>());
    batch.insert(batch.end(), x.begin(), x.end());
  }
  const int output = bb.graph().output_op;
  const int taps[] = {9, 20, 46, output};
  const auto out = bb.forward(batch.data(), TensorShape{N, 3, 224, 224, 4}, taps);
  ASSERT_EQ(out.size(), 4u);
  const TensorShape probs_shape = out[3].shape;
  ASSERT_EQ(probs_shape.rank, 2);
  ASSERT_EQ(probs_shape.c, 1001);

  for (int64_t n = 0; n < N; ++n) {
    const auto& r = results[n];
    const std::string image = r.at("image");
    const float* p = out[3].data.data() + n * probs_shape.c;
    const int64_t top1 = std::max_element(p, p + probs_shape.c) - p;
    EXPECT_EQ(top1, r.at("top1").get<int64_t>()) << image << " (" << r.at("label") << ")";
    EXPECT_NEAR(p[top1], r.at("prob").get<double>(), 2e-3) << image;
    std::printf("%s: top-1 %lld p=%.4f (expected %lld p=%.4f)\n", image.c_str(),
                static_cast<long long>(top1), p[top1], r.at("top1").get<long long>(),
                r.at("prob").get<double>());
    for (int t = 0; t < 3; ++t) {
      const auto& e = r.at("taps").at(std::to_string(taps[t]));
      const TensorShape s = out[t].shape;
      ASSERT_EQ(s.dims(),
                (std::vector<int64_t>{N, e.at("shape")[1], e.at("shape")[2], e.at("shape")[3]}))
          << image << " tap " << taps[t];
      const int64_t per = s.c * s.h * s.w;
      const Stats st = stats(out[t].data.data() + n * per, per);
      const double em = e.at("mean"), es = e.at("std");
      std::printf("  tap %2d %s mean %.5f (expected %.5f) std %.5f (expected %.5f)\n", taps[t],
                  s.str().c_str(), st.mean, em, st.std, es);
      // expected.json rounds to 5 decimals; allow that on top of 1e-3 relative.
      EXPECT_NEAR(st.mean, em, 1e-3 * std::abs(em) + 5e-6) << image << " tap " << taps[t];
      EXPECT_NEAR(st.std, es, 1e-3 * std::abs(es) + 5e-6) << image << " tap " << taps[t];
    }
  }

  // One photo alone gives the same numbers as in the batch (up to summation order).
  const int64_t per_image = 3 * 224 * 224;
  const auto single = bb.forward(batch.data() + per_image, TensorShape{1, 3, 224, 224, 4}, taps);
  for (int t = 0; t < 4; ++t) {
    const int64_t per = out[t].shape.numel() / N;
    double worst = 0;
    for (int64_t i = 0; i < per; ++i)
      worst =
          std::max<double>(worst, std::abs(single[t].data.data()[i] - out[t].data.data()[per + i]));
    EXPECT_LT(worst, 1e-4) << "tap " << taps[t];
  }
}

// The graph file loads unchanged and its shapes are what expected.json says.
TEST(backbone_mobilenet, GraphLoadsAndInfersShapes) {
  const Fixture f = load_fixture();
  if (f.model.empty())
    GTEST_SKIP() << "no MobileNetV2 weights under " << shared_root()
                 << " (set MIRAD_SHARED to the shared folder)";
  Backbone bb(f.model, Device::cpu);
  EXPECT_EQ(bb.n_ops(), 66);
  EXPECT_EQ(bb.graph().input_channels, 3);
  const int taps[] = {9, 20, 46, 62, 65};
  const auto shapes = bb.tap_shapes(TensorShape{2, 3, 224, 224, 4}, taps);
  EXPECT_EQ(shapes[0], (TensorShape{2, 24, 56, 56, 4}));
  EXPECT_EQ(shapes[1], (TensorShape{2, 32, 28, 28, 4}));
  EXPECT_EQ(shapes[2], (TensorShape{2, 96, 14, 14, 4}));
  EXPECT_EQ(shapes[3], (TensorShape{2, 1280, 1, 1, 4}));
  EXPECT_EQ(shapes[4], (TensorShape{2, 1001, 1, 1, 2}));
  // Feature taps work at other input sizes (odd ones included): SAME padding adapts.
  const int feature_taps[] = {20, 46};
  const auto odd = bb.tap_shapes(TensorShape{1, 3, 257, 199, 4}, feature_taps);
  EXPECT_EQ(odd[0], (TensorShape{1, 32, 33, 25, 4}));
  EXPECT_EQ(odd[1], (TensorShape{1, 96, 17, 13, 4}));
}

}  // namespace
}  // namespace mirad
