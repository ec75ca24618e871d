// Resuming refinement from every round's checkpoint, in the modes Refinement's own resume test
// does not cover (soft weights, a person's keep/reject review, two taps, cross-fit with a
// baseline): the state checks of engine/detector/refine_resume.cpp must accept every state a real run
// writes, and the resumed run must end bit for bit where an uninterrupted one does. Then one
// edit per derived field is refused (issue 13, findings 1 and 14).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <random>

#include "engine/detector/refinement.h"
#include "expect_error.h"
#include "host/episode_scheduler.h"
#include "temp_dir.h"

using namespace mirad;
using mirad::test::expect_input_error;
using mirad::test::TempDir;

namespace {

constexpr int64_t C = 4, H = 4, W = 4, HW = H * W;

// 20 normal images (sin pattern + noise) and 4 with a bump in one corner.
std::vector<float> rows(uint64_t seed, float phase) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> r;
  for (int64_t i = 0; i < 24; ++i)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) {
        const bool corner = i >= 20 && (p / W) < 2 && (p % W) < 2;
        r.push_back(std::sin(0.7f * p + c + phase) + 0.3f * nd(rng) + (corner ? 2.5f : 0.0f));
      }
  return r;
}

DetectorConfig config() {
  DetectorConfig c;
  c.flow.n_blocks = 2;
  c.flow.cond_dim = 8;
  c.train.budget = 60;
  c.train.support = 6;
  c.train.positions = 0;
  c.refine.folds = 3;
  c.score.top_fraction = 0.25;
  return c;
}

struct Case {
  const char* name;
  std::function<void(DetectorConfig&, RefineOptions&)> set;
};

}  // namespace

TEST(RefineResume, EveryRoundsCheckpointResumesToTheSameResult) {
  const PatchBank a(rows(1, 0.0f), 24, C, H, W, 8, Device::cpu);
  const PatchBank b(rows(2, 0.5f), 24, C, H, W, 8, Device::cpu);
  const std::vector<Case> cases = {
      {"soft", [](DetectorConfig& c, RefineOptions&) {
         c.refine.soft = true, c.refine.scoring = ScoringMethod::in_sample;
       }},
      {"soft cross-fit", [](DetectorConfig& c, RefineOptions&) { c.refine.soft = true; }},
      {"review in-sample", [](DetectorConfig& c, RefineOptions& o) {
         c.refine.scoring = ScoringMethod::in_sample;
         o.always_keep = {21}, o.always_reject = {3, 22};
         o.baseline = true;
       }},
      {"review cross-fit baseline", [](DetectorConfig&, RefineOptions& o) {
         o.always_keep = {20}, o.always_reject = {5};
         o.baseline = true;
       }},
  };
  for (const Case& cs : cases) {
    DetectorConfig cfg = config();
    RefineOptions base;
    cs.set(cfg, base);
    const auto full = refine({&a, &b}, cfg, EpisodeScheduler::factory(), Device::cpu, base);
    std::printf("%s: %zu rounds, stop %s\n", cs.name, full.rounds.size(), full.stop_reason.c_str());
    for (int stop = 1; stop <= int(full.rounds.size()); ++stop) {
      TempDir tmp;
      RefineOptions o = base;
      o.checkpoint = [&](const RefineCheckpoint& c) {
        save_refine_checkpoint(tmp.path(), c);
        if (c.rounds_done == stop) throw std::runtime_error("killed");
      };
      EXPECT_THROW(refine({&a, &b}, cfg, EpisodeScheduler::factory(), Device::cpu, o),
                   std::runtime_error);
      const auto cp = load_refine_checkpoint(tmp.path());
      ASSERT_TRUE(cp.has_value()) << cs.name;
      RefineOptions r = base;
      r.resume = &*cp;
      RefinementResult resumed;
      ASSERT_NO_THROW(resumed = refine({&a, &b}, cfg, EpisodeScheduler::factory(), Device::cpu, r))
          << cs.name << ", resumed after round " << stop;
      for (size_t t = 0; t < 2; ++t)
        EXPECT_EQ(resumed.model.taps[t].theta, full.model.taps[t].theta) << cs.name << stop;
      EXPECT_EQ(resumed.calibration_scores, full.calibration_scores) << cs.name << stop;
      EXPECT_EQ(resumed.retained, full.retained) << cs.name << stop;
      ASSERT_EQ(resumed.rejected.size(), full.rejected.size()) << cs.name << stop;
      for (size_t i = 0; i < full.rejected.size(); ++i)
        EXPECT_EQ(resumed.rejected[i].image, full.rejected[i].image) << cs.name << stop;
    }
  }
}

TEST(RefineResume, EditsOfDerivedStateAreRefused) {
  const PatchBank a(rows(1, 0.0f), 24, C, H, W, 8, Device::cpu);
  DetectorConfig cfg = config();
  TempDir tmp;
  RefineOptions o;
  o.checkpoint = [&](const RefineCheckpoint& c) {
    save_refine_checkpoint(tmp.path(), c);
    throw std::runtime_error("killed after round 1");
  };
  EXPECT_THROW(refine({&a}, cfg, EpisodeScheduler::factory(), Device::cpu, o), std::runtime_error);
  const RefineCheckpoint good = *load_refine_checkpoint(tmp.path());
  ASSERT_FALSE(good.loop_done) << "the fixture needs a second round";
  auto refused = [&](const std::function<void(RefineCheckpoint&)>& edit, const std::string& what) {
    RefineCheckpoint c = good;
    edit(c);
    RefineOptions r;
    r.resume = &c;
    expect_input_error([&] { refine({&a}, cfg, EpisodeScheduler::factory(), Device::cpu, r); },
                       "does not fit this run", what);
  };
  // The probe's edit: a cross-fit run told its loop and final model are done (SIGSEGV before).
  refused([](auto& c) { c.loop_done = c.final_ready = true; }, "do not follow from round 1");
  refused([](auto& c) { c.loop_done = true, c.stop_reason = "converged"; }, "do not follow");
  refused([](auto& c) { c.retained.pop_back(); }, "the retained images are not those");
  refused([](auto& c) { c.rejected.pop_back(); }, "the rejections differ");
  refused([](auto& c) { c.rounds[0].scored.pop_back(); }, "round 1 scored other images");
  refused([](auto& c) { c.has_prev = {0, 0, 0}, c.prev.assign(3, {}); }, "no fold model");
  refused([](auto& c) { c.prev.pop_back(), c.has_prev.pop_back(); }, "2 fold models for 3");
  refused([](auto& c) { c.last_model = c.prev[0]; }, "cross-fit stores an in-sample model");
  refused([](auto& c) { c.prev[0].taps[0].flow.n_blocks = 3; }, "another flow");
  refused([](auto& c) { c.flagged = {99}; }, "flagged image 99");
  refused([](auto& c) { c.last_maps.grids[0].width = 5; }, "other grid");
  RefineOptions r;
  r.resume = &good;
  EXPECT_NO_THROW(refine({&a}, cfg, EpisodeScheduler::factory(), Device::cpu, r));
}
