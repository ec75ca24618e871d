// Detector config (strict JSON) and model folders: round trip, and every way a model folder can
// be wrong is a clear error; the episode scheduler's draws.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <fstream>
#include <set>

#include "engine/detector/detector_model.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "expect_error.h"
#include "fuzz/fixtures.h"
#include "host/episode_scheduler.h"
#include "temp_dir.h"

using namespace mirad;
using mirad::test::expect_input_error;
using mirad::test::TempDir;
namespace fs = std::filesystem;

namespace {

DetectorModel tiny_model() {
  DetectorModel m;
  m.config.train.budget = 77;
  m.config.flow.n_blocks = 2, m.config.flow.cond_dim = 8;
  m.backbone.name = "net";
  m.backbone.weights_sha256 = std::string(64, 'a');
  m.backbone.input_height = 256, m.backbone.input_width = 320;
  m.backbone.mean = {0.5, 0.5, 0.5}, m.backbone.std = {0.25, 0.25, 0.25};
  for (int t = 0; t < 2; ++t) {
    TapModel tm;
    tm.name = t ? "stride16" : "stride8";
    tm.op = 10 + t;
    tm.channels = 6, tm.height = 4 - t, tm.width = 5 - t;
    tm.norm.mean.assign(6, 0.1f * (t + 1));
    tm.norm.std.assign(6, 2.0f);
    // The flow config.flow gives: a model whose copies disagree is refused on load.
    tm.params.flow = tap_flow_config(m.config, tm.channels, t);
    const int64_t n = FlowLayout(tm.params.flow).n_params;
    for (int64_t i = 0; i < n; ++i) {
      tm.params.theta.push_back(0.001f * i + t);
      tm.params.theta0.push_back(-0.002f * i);
    }
    m.taps.push_back(tm);
    m.stats.taps.push_back({1.5 + t, 0.25});
  }
  mirad::fuzz::set_tiny_results(m);
  return m;
}

}  // namespace

TEST(DetectorConfig, RejectsUnknownKeysWrongTypesAndRanges) {
  expect_input_error([] { DetectorConfig::from_json({{"trian", {}}}); }, "unknown key 'trian'");
  expect_input_error([] { DetectorConfig::from_json({{"train", {{"budegt", 5}}}}); },
                     "config.train: unknown key 'budegt'");
  expect_input_error([] { DetectorConfig::from_json({{"train", {{"budget", 5.5}}}}); },
                     "config.train.budget must be an integer");
  expect_input_error([] { DetectorConfig::from_json({{"train", {{"inner_lr", -1}}}}); },
                     "config.train.inner_lr must be in");
  expect_input_error([] { DetectorConfig::from_json({{"refine", {{"rule", "median"}}}}); },
                     "must be one of iqr, adjusted, mad, gmm");
  expect_input_error([] { DetectorConfig::from_json({{"seed", -1}}); }, "config.seed");
  expect_input_error([] { DetectorConfig::from_json({{"flow", {{"cond_dim", 10}}}}); },
                     "multiple of 4");
  expect_input_error([] { DetectorConfig::from_json({{"train", {{"precision", "fp16"}}}}); },
                     "must be one of fp32, tf32, bf16");
  expect_input_error([] { DetectorConfig::from_json({{"train", {{"batched_tasks", true}}}}); },
                     "config.train.batched_tasks must be a string");
  expect_input_error([] { DetectorConfig::from_json({{"train", {{"batched_tasks", "yes"}}}}); },
                     "must be one of auto, on, off");
  expect_input_error([] { DetectorConfig::from_json({{"features", {{"precision", "int8"}}}}); },
                     "config.features.precision must be one of fp32, tf32, fp16, bf16");
  EXPECT_EQ(DetectorConfig{}.features.precision, "fp32");
  EXPECT_EQ(DetectorConfig::from_json({{"features", {{"precision", "fp16"}}}}).features.precision,
            "fp16");
  {
    const DetectorConfig b = DetectorConfig::from_json(
        {{"train", {{"precision", "bf16"}, {"batched_tasks", "off"}}}});
    EXPECT_EQ(b.train.precision, FlowPrecision::bf16);
    EXPECT_EQ(b.train.batched_tasks, TaskBatching::off);
    EXPECT_EQ(DetectorConfig{}.train.batched_tasks, TaskBatching::automatic);
  }
  // Round trip, and the rule's k defaults by rule.
  DetectorConfig c = DetectorConfig::from_json({{"refine", {{"rule", "mad"}}}, {"seed", 5}});
  EXPECT_DOUBLE_EQ(c.rule_k(), 3.0);
  EXPECT_EQ(DetectorConfig::from_json(c.to_json()).to_json(), c.to_json());
  // Gradient evaluations per step: plain (the default) one; MAML second order, n_inner 1,
  // B 4 -> 4 * (1 + 1 + 2); first order 4 * (1 + 1); n_inner 3 -> 4 * (3 + 1 + 6).
  EXPECT_EQ(DetectorConfig{}.evals_per_step(), 1);
  DetectorConfig m = DetectorConfig::from_json({{"train", {{"mode", "maml"}}}});
  EXPECT_EQ(m.evals_per_step(), 16);
  m.train.second_order = false;
  EXPECT_EQ(m.evals_per_step(), 8);
  m.train.second_order = true;
  m.train.n_inner = 3;
  EXPECT_EQ(m.evals_per_step(), 40);
}

TEST(DetectorModel, SaveLoadRoundTrip) {
  TempDir tmp;
  const auto m = tiny_model();
  save_detector(tmp / "model", m);
  const auto l = load_detector(tmp / "model");
  EXPECT_EQ(l.config.to_json(), m.config.to_json());
  EXPECT_EQ(l.backbone.weights_sha256, m.backbone.weights_sha256);
  EXPECT_EQ(l.backbone.input_width, 320);
  ASSERT_EQ(l.taps.size(), 2u);
  for (size_t t = 0; t < 2; ++t) {
    EXPECT_EQ(l.taps[t].params.theta, m.taps[t].params.theta);
    EXPECT_EQ(l.taps[t].params.theta0, m.taps[t].params.theta0);
    EXPECT_EQ(l.taps[t].norm.mean, m.taps[t].norm.mean);
    EXPECT_EQ(l.stats.taps[t].median, m.stats.taps[t].median);
  }
  EXPECT_EQ(l.threshold, 1.75);
  EXPECT_EQ(l.rejected.at(0).path, "c.png");
  // Saving again replaces the model folder as a whole and leaves no temporary folder.
  auto m2 = m;
  m2.threshold = 2.5;
  save_detector(tmp / "model", m2);
  EXPECT_EQ(load_detector(tmp / "model").threshold, 2.5);
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) (void)e, ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(DetectorModel, BadFoldersAreClearErrors) {
  TempDir tmp;
  save_detector(tmp / "m", tiny_model());
  const fs::path cfg = tmp / "m" / "config.json", flow = tmp / "m" / "flow.safetensors";
  const std::string good_cfg = read_file_text(cfg);
  const auto good_flow = read_file_bytes(flow);
  auto with_config = [&](const std::function<void(nlohmann::json&)>& edit) {
    auto j = parse_json_bounded(good_cfg, "test");
    edit(j);
    write_file_atomic(cfg, j.dump());
  };
  // A flow file that is not the one config.json was written with.
  auto other = good_flow;
  other[other.size() - 1] ^= 1;
  write_file_atomic(flow, other);
  expect_input_error([&] { load_detector(tmp / "m"); }, "does not match its config.json");
  write_file_atomic(flow, good_flow);
  with_config([](nlohmann::json& j) { j["schema_version"] = 99; });
  expect_input_error([&] { load_detector(tmp / "m"); }, "schema version 99");
  with_config([](nlohmann::json& j) { j["format"] = "something"; });
  expect_input_error([&] { load_detector(tmp / "m"); }, "not a mirad detector");
  with_config([](nlohmann::json& j) { j["config"]["train"]["budgte"] = 1; });
  expect_input_error([&] { load_detector(tmp / "m"); }, "unknown key 'budgte'");
  with_config([](nlohmann::json& j) { j["taps"][0]["channels"] = 7; });
  expect_input_error([&] { load_detector(tmp / "m"); }, "flow dim 6 != channels 7");
  with_config([](nlohmann::json& j) { j.erase("threshold"); });
  expect_input_error([&] { load_detector(tmp / "m"); }, "lacks 'threshold'");
  write_file_atomic(cfg, good_cfg);
  EXPECT_NO_THROW(load_detector(tmp / "m"));
  fs::remove(flow);
  expect_input_error([&] { load_detector(tmp / "m"); }, "flow.safetensors");
  expect_input_error([&] { load_detector(tmp / "nothing"); }, "is not a folder");
  // An existing folder that is not a model is never replaced.
  fs::create_directories(tmp / "photos");
  write_file_atomic(tmp / "photos" / "a.txt", std::string("keep me"));
  expect_input_error([&] { save_detector(tmp / "photos", tiny_model()); },
                     "not a mirad model folder");
  expect_input_error([&] { check_model_output(tmp / "photos"); }, "not a mirad model folder");
  EXPECT_EQ(read_file_text(tmp / "photos" / "a.txt"), "keep me");
}

// Issue 13, finding 13: config.json is not hash-covered, and holds some fields twice.
TEST(DetectorModel, DuplicatedFieldsThatDisagreeAreRefused) {
  TempDir tmp;
  save_detector(tmp / "m", tiny_model());
  const fs::path cfg = tmp / "m" / "config.json";
  const std::string good_cfg = read_file_text(cfg);
  auto refused = [&](const std::function<void(nlohmann::json&)>& edit, const std::string& what) {
    auto j = parse_json_bounded(good_cfg, "test");
    edit(j);
    write_file_atomic(cfg, j.dump());
    expect_input_error([&] { load_detector(tmp / "m"); }, what);
  };
  refused([](auto& j) { j["config"]["features"]["smooth"] = false; },
          "config.features.smooth is false but backbone.smooth is true");
  refused([](auto& j) { j["taps"][1]["name"] = "stride8"; },
          "taps[1] is named 'stride8' but config.features.taps[1] is 'stride16'");
  refused([](auto& j) { j["config"]["features"]["taps"] = {"stride8"}; },
          "config.features.taps names 1 taps but taps holds 2");
  refused([](auto& j) { j["config"]["features"]["taps"][0] = "10"; },
          "taps[0] is named 'stride8' but config.features.taps[0] is '10'");
  refused([](auto& j) {
    j["config"]["features"]["taps"][0] = "12";
    j["taps"][0]["name"] = "op12";
  }, "taps[0].op is 10 but the tap is op 12");
  refused([](auto& j) { j["taps"][0]["flow"]["seed"] = 5; }, "taps[0].flow is not the flow");
  refused([](auto& j) { j["config"]["flow"]["cond_dim"] = 16; }, "taps[0].flow is not the flow");
  refused([](auto& j) { j["config"]["seed"] = 3; }, "taps[0].flow is not the flow");
  write_file_atomic(cfg, good_cfg);
  EXPECT_NO_THROW(load_detector(tmp / "m"));
}

// Issue 13, findings 12 and 17: a MAML budget that cannot pay for one step, duplicate taps.
TEST(DetectorConfig, OverBudgetMamlAndDuplicateTapsAreRefused) {
  auto cfg = DetectorConfig::from_json(
      {{"train", {{"mode", "maml"}, {"meta_batch", 1024}, {"budget", 20}}}});
  expect_input_error([&] { cfg.check_training_budget(); },
                     "one MAML step of 1024 tasks costs 4096 gradient evaluations",
                     "over the budget of 20");
  cfg = DetectorConfig::from_json({{"train", {{"mode", "maml"}, {"budget", 40}}}});
  expect_input_error([&] { cfg.check_training_budget(); }, "train.round_budget = 20");
  cfg.train.warm_start = false;
  EXPECT_NO_THROW(cfg.check_training_budget());
  EXPECT_NO_THROW(DetectorConfig::from_json({{"train", {{"mode", "maml"}}}}).check_training_budget());
  EXPECT_NO_THROW(DetectorConfig::from_json({{"train", {{"budget", 1}}}}).check_training_budget());
  expect_input_error(
      [] { DetectorConfig::from_json({{"features", {{"taps", {"stride8", "stride8"}}}}}); },
      "config.features.taps lists 'stride8' twice");
}

TEST(EpisodeScheduler, TasksAreDisjointSeededAndWeighted) {
  std::vector<int64_t> pool;
  for (int64_t i = 0; i < 30; ++i) pool.push_back(100 + i);
  EpisodeScheduler a(pool, {}, 8, 8, 3), b(pool, {}, 8, 8, 3), c(pool, {}, 8, 8, 4);
  bool differs = false;
  for (int k = 0; k < 50; ++k) {
    const Episode ea = a.next_task(), eb = b.next_task(), ec = c.next_task();
    EXPECT_EQ(ea.support, eb.support);
    EXPECT_EQ(ea.query, eb.query);
    differs |= ea.support != ec.support;
    std::set<int64_t> all(ea.support.begin(), ea.support.end());
    all.insert(ea.query.begin(), ea.query.end());
    EXPECT_EQ(all.size(), 16u) << "support and query must be disjoint, without repeats";
    for (int64_t i : all) EXPECT_TRUE(i >= 100 && i < 130);
  }
  EXPECT_TRUE(differs);
  // Positions: distinct within an image, all of them when asked.
  const auto rows = a.rows({100, 101}, 16, 5);
  ASSERT_EQ(rows.size(), 10u);
  EXPECT_EQ(std::set<int64_t>(rows.begin(), rows.begin() + 5).size(), 5u);
  for (int j = 0; j < 5; ++j) EXPECT_EQ(rows[j] / 16, 100);
  EXPECT_EQ(a.rows({7}, 16, 0).size(), 16u);
  // A small pool splits in half.
  EpisodeScheduler small({1, 2, 3}, {}, 8, 8, 0);
  EXPECT_EQ(small.support_size(), 1);
  EXPECT_EQ(small.query_size(), 2);
  // Weighted draws: weight-0 images come last, low weights rarely.
  std::vector<double> w(30, 1.0);
  w[0] = 0.0, w[1] = 0.05;
  EpisodeScheduler ws(pool, w, 4, 4, 9);
  int zero = 0, low = 0;
  for (int k = 0; k < 400; ++k)
    for (int64_t i : ws.next_batch()) zero += i == 100, low += i == 101;
  EXPECT_EQ(zero, 0);
  EXPECT_LT(low, 400 * 4 / 30 / 4);  // well under a quarter of a weight-1 image's draws
  expect_input_error([] { EpisodeScheduler({1}, {}, 2, 2, 0); }, "at least 2");
  expect_input_error([] { EpisodeScheduler({1, 2}, {0.5, 1.5}, 2, 2, 0); }, "not in [0, 1]");
}
