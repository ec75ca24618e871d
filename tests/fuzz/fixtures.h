// Fixed, valid objects the fuzz targets and their seed generator (make_seeds.cpp) share: a small
// dataset split for manifests, a tiny detector model, a tiny refinement checkpoint. The seeds
// are these objects as mirad writes them; the targets use the same objects as the fixed half of
// a two-file input (the flow file beside a fuzzed config.json).
#pragma once

#include <filesystem>
#include <string>

#include "engine/detector/detector_model.h"
#include "engine/flow/flow_config.h"
#include "engine/detector/refinement.h"
#include "host/dataset.h"

namespace mirad::fuzz {

// Stands for the sha256 of the second file of a model or checkpoint input: the targets replace
// it by the real digest, so that fuzzed config.json/checkpoint.json get past the digest check
// and reach the code behind it.
inline constexpr const char* kShaToken = "FUZZ_SHA256_OF_TENSORS";

// An MVTec-style category held in memory (no files): 10 good training images; a test split of
// 4 good and 6 defect images of two types, each defect with a mask.
inline Dataset fixture_dataset(const std::filesystem::path& root) {
  Dataset d;
  d.layout = "mvtec";
  d.root = root;
  for (int i = 0; i < 10; ++i)
    d.train.push_back({root / "train/good" / (std::to_string(100 + i) + ".png"), Label::good,
                       "good", {}});
  for (int i = 0; i < 4; ++i)
    d.test.push_back({root / "test/good" / (std::to_string(100 + i) + ".png"), Label::good,
                      "good", {}});
  for (const char* type : {"crack", "hole"})
    for (int i = 0; i < 3; ++i) {
      const std::string stem = std::to_string(100 + i);
      d.test.push_back({root / "test" / type / (stem + ".png"), Label::defect, type,
                        root / "ground_truth" / type / (stem + "_mask.png")});
    }
  return d;
}

inline FlowConfig tiny_flow(uint64_t seed) {
  FlowConfig f;
  f.dim = 4, f.cond_dim = 4, f.n_blocks = 2, f.seed = seed;
  return f;
}

inline TapParams tiny_params(int t, const FlowConfig& flow) {
  TapParams p;
  p.flow = flow;
  const int64_t n = FlowLayout(p.flow).n_params;
  for (int64_t i = 0; i < n; ++i) {
    p.theta.push_back(0.001f * float(i) + float(t));
    p.theta0.push_back(-0.002f * float(i));
  }
  p.optimizer.type = "adam";
  p.optimizer.step = 3;
  p.optimizer.slots["m"] = std::vector<float>(std::size_t(n), 0.25f);
  p.optimizer.slots["v"] = std::vector<float>(std::size_t(n), 0.5f);
  return p;
}
inline TapParams tiny_params(int t) { return tiny_params(t, tiny_flow(uint64_t(t))); }

// The image-score statistics, threshold and image lists of a small valid model (also
// tests/test_detector_model.cpp's): what a model file holds besides its taps.
inline void set_tiny_results(DetectorModel& m) {
  m.stats.top = {0.3, 0.7}, m.stats.mean = {-0.1, 0.2};
  m.stats.map_lo = 0.5, m.stats.map_hi = 4.0;
  m.threshold = 1.75;
  m.threshold_detail = "Q3 + 1.5*IQR";
  m.retained = {"a.png", "b.png"};
  m.rejected = {{"c.png", 1, 9.5, 1.75, 0.0}};
}

// Two taps of 4 channels, flows of 2 blocks: a flow.safetensors of a few KB.
inline DetectorModel tiny_model() {
  DetectorModel m;
  m.config.flow.n_blocks = 2;
  m.config.flow.cond_dim = 4;
  m.config.train.budget = 8;
  m.backbone.name = "net";
  m.backbone.path = "/models/net";
  m.backbone.weights_sha256 = std::string(64, 'a');
  m.backbone.input_height = 64, m.backbone.input_width = 80;
  m.backbone.mean = {0.485, 0.456, 0.406}, m.backbone.std = {0.229, 0.224, 0.225};
  for (int t = 0; t < 2; ++t) {
    TapModel tm;
    tm.name = t ? "stride16" : "stride8";
    tm.op = 10 + t;
    tm.channels = 4, tm.height = 8 >> t, tm.width = 10 >> t;
    tm.norm.mean.assign(4, 0.1f * float(t + 1));
    tm.norm.std.assign(4, 2.0f);
    // The flow config.flow gives: a model whose copies disagree is refused on load.
    tm.params = tiny_params(t, tap_flow_config(m.config, tm.channels, t));
    m.taps.push_back(tm);
    m.stats.taps.push_back({1.5 + t, 0.25});
  }
  set_tiny_results(m);
  return m;
}

// A checkpoint after one round of a 2-tap run with cross-fit (2 folds) and a baseline.
inline RefineCheckpoint tiny_checkpoint() {
  RefineCheckpoint c;
  c.run_key = "fuzz-run";
  c.rounds_done = 1;
  c.stop_reason = "";
  RoundRecord r;
  r.round = 1;
  r.scored = {0, 1, 2, 3};
  r.scores = {0.5, 1.5, -0.25, 9.0};
  r.tau = 4.0;
  r.rule_detail = "Q3 + 1.5*IQR";
  r.rejected = {3};
  r.train_loss = 1.25;
  r.seconds = 0.5;
  c.rounds.push_back(r);
  c.rejected.push_back({3, 1, 9.0, 4.0, 0.0});
  c.retained = {0, 1, 2};
  ModelSet two;
  two.taps = {tiny_params(0), tiny_params(1)};
  c.prev = {two, two};
  c.has_prev = {1, 1};
  c.last_maps.grids = {{2, 3}, {1, 2}};
  c.last_maps.nll = {std::vector<float>(4 * 6, 0.5f), std::vector<float>(4 * 2, 1.5f)};
  c.last_maps.n_images = 4;
  c.last_scored = {0, 1, 2, 3};
  c.last_model = two;
  c.has_baseline = true;
  c.baseline = two;
  c.baseline_stats.taps = {{1.0, 0.5}, {2.0, 0.25}};
  c.baseline_stats.top = {0.3, 0.7};
  c.baseline_stats.mean = {-0.1, 0.2};
  c.baseline_threshold = 2.5;
  return c;
}

}  // namespace mirad::fuzz
