// Shared by the CPU and CUDA feature-extractor tests: a small generated backbone, generated
// images, and the per-image reference (backbone alone + naive 3x3 mean).
#pragma once

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "engine/backbone/backbone.h"
#include "core/error.h"
#include "engine/io/safetensors.h"
#include "host/feature_extractor.h"
#include "host/image.h"
#include "host/resize.h"
#include "temp_dir.h"

namespace mirad::test {

namespace fs = std::filesystem;

// conv 3x3 s2 (3 -> 4, relu) -> conv 3x3 s1 (4 -> 6); taps "a" = op 0, "b" = op 1.
inline void write_backbone(const fs::path& dir) {
  fs::create_directories(dir);
  const char* graph = R"({
    "name": "tiny", "input": "x", "output": "y2", "input_shape": [3, 32, 32],
    "preprocess": {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.3], "resize": 32, "crop": 32},
    "taps": {"a": 0, "b": 1},
    "ops": [
      {"op": "CONV_2D", "inputs": ["x"], "output": "y1", "weight": "w1", "bias": "b1",
       "stride": 2, "padding": "SAME", "act": "relu", "out_channels": 4},
      {"op": "CONV_2D", "inputs": ["y1"], "output": "y2", "weight": "w2", "bias": "b2",
       "stride": 1, "pads": [1, 1, 1, 1], "act": "none", "out_channels": 6}]})";
  std::ofstream(dir / "graph.json") << graph;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.f, 0.3f);
  auto rnd = [&](std::vector<int64_t> shape) {
    HostTensor t;
    t.shape = shape;
    t.data.resize(t.numel());
    for (auto& v : t.data) v = nd(rng);
    return t;
  };
  save_safetensors(dir / "weights.safetensors",
                   {{"w1", rnd({4, 3, 3, 3})}, {"b1", rnd({4})}, {"w2", rnd({6, 4, 3, 3})},
                    {"b2", rnd({6})}});
}

inline std::vector<fs::path> write_images(const fs::path& dir, int n) {
  fs::create_directories(dir);
  std::mt19937 rng(5);
  std::vector<fs::path> paths;
  for (int i = 0; i < n; ++i) {
    Image img(37 + i, 41, 3);  // odd sizes: every image is resized
    for (int64_t k = 0; k < int64_t(img.height()) * img.width() * 3; ++k) img.u8()[k] = rng() % 256;
    paths.push_back(dir / fmt::format("img{}.png", i));
    encode_png(paths.back(), img, false);
  }
  return paths;
}

inline std::vector<float> naive_smooth(const std::vector<float>& x, int64_t c, int64_t h, int64_t w) {
  std::vector<float> y(x.size());
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        double sum = 0;
        int count = 0;
        for (int64_t di = -1; di <= 1; ++di)
          for (int64_t dj = -1; dj <= 1; ++dj)
            if (i + di >= 0 && i + di < h && j + dj >= 0 && j + dj < w)
              sum += x[(ch * h + i + di) * w + j + dj], ++count;
        y[(ch * h + i) * w + j] = float(sum / count);
      }
  return y;
}

inline void check_extractor(Device dev, double tol = 1e-5) {
  test::TempDir tmp("mirad_extract");
  write_backbone(tmp / "bb");
  auto images = write_images(tmp / "imgs", 5);
  FeatureExtractorOptions opt;
  opt.taps = {"a", "b"};
  opt.batch_size = 2;
  opt.ring_slots = 2;
  opt.threads = 2;
  FeatureExtractor fx(tmp / "bb", dev, opt);
  ASSERT_EQ(fx.tap_shapes().size(), 2u);
  EXPECT_EQ(fx.tap_shapes()[0].channels, 4);
  EXPECT_EQ(fx.tap_shapes()[0].height, 16);
  EXPECT_EQ(fx.tap_shapes()[1].channels, 6);
  int64_t last = 0;
  auto cache = fx.extract(images, [&](int64_t done, int64_t total) {
    EXPECT_EQ(total, 5);
    last = done;
  });
  EXPECT_EQ(last, 5);
  Backbone ref(tmp / "bb", Device::cpu);
  for (size_t i = 0; i < images.size(); ++i) {
    auto x = preprocess(decode_image(images[i]), fx.preprocess());
    const int taps[] = {0, 1};
    auto outs = ref.forward(x.data(), TensorShape{1, 3, 32, 32}, taps);
    for (int t = 0; t < 2; ++t) {
      const auto& s = fx.tap_shapes()[t];
      auto want = naive_smooth(outs[t].data.to_host(), s.channels, s.height, s.width);
      std::vector<float> got(s.numel());
      mem::copy(got.data(), Device::cpu, cache->features(int64_t(i), t), cache->location(),
                got.size() * sizeof(float), {});
      mem::synchronize({});
      double err = 0, ref_max = 0;
      for (size_t k = 0; k < got.size(); ++k)
        err = std::max(err, double(std::abs(got[k] - want[k]))),
        ref_max = std::max(ref_max, double(std::abs(want[k])));
      EXPECT_LT(err, tol * (1 + ref_max)) << "image " << i << " tap " << t;
    }
  }
}

}  // namespace mirad::test
