// Refinement on synthetic feature banks: contaminants with a local defect are rejected; an
// outlier planted twice is caught by cross-fit but vouched for in-sample; non-finite scores are
// rejected and reported, also above 25%; min_keep; soft weights; identical results for any
// worker count and run to run.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "engine/detector/refinement.h"
#include "core/threads.h"
#include "host/episode_scheduler.h"
#include "temp_dir.h"

using namespace mirad;
using mirad::test::TempDir;

namespace {

constexpr int64_t C = 4, H = 4, W = 4, HW = H * W;

// Normal image: x[p, c] = sin(0.7 p + c) + 0.3 noise. A defective one adds `bump` to a 2x2
// corner (a local defect: 4 of 16 positions).
std::vector<float> make_rows(int64_t n_good, const std::vector<float>& bumps, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> rows;
  const int64_t n = n_good + int64_t(bumps.size());
  for (int64_t i = 0; i < n; ++i) {
    const float bump = i < n_good ? 0.0f : bumps[i - n_good];
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) {
        const bool corner = (p / W) < 2 && (p % W) < 2;
        rows.push_back(std::sin(0.7f * p + c) + 0.3f * nd(rng) + (corner ? bump : 0.0f));
      }
  }
  return rows;
}

DetectorConfig small_config() {
  DetectorConfig c;
  c.flow.n_blocks = 3;
  c.flow.cond_dim = 8;
  c.train.mode = TrainMode::plain;
  c.train.budget = 200;
  c.train.support = 6;
  c.train.positions = 0;
  c.train.meta_lr = 3e-3;
  c.refine.scoring = ScoringMethod::in_sample;
  c.refine.folds = 3;
  c.score.top_fraction = 0.25;  // 4 of 16 cells: the size of the defect
  return c;
}

RefinementResult run(const PatchBank& bank, const DetectorConfig& cfg, int workers = 1) {
  RefineOptions o;
  o.workers = workers;
  return refine({&bank}, cfg, EpisodeScheduler::factory(), Device::cpu, o);
}

std::set<int64_t> rejected_set(const RefinementResult& r) {
  std::set<int64_t> s;
  for (const auto& x : r.rejected) s.insert(x.image);
  return s;
}

}  // namespace

// Bounds from a distribution, not one run: data seeds 1-5 with config seeds 0-4, each measured
// on the five forced CPU kernel paths (tools/cpu_paths.sh); the worst case is beside each bound.
TEST(Refinement, RejectsMostContaminantsInSampleAndCrossFit) {
  const int64_t n_good = 40;
  const std::vector<float> bumps(8, 2.5f);
  for (uint64_t seed = 0; seed < 5; ++seed) {
    PatchBank bank(make_rows(n_good, bumps, 1 + seed), n_good + 8, C, H, W, 8, Device::cpu);
    for (ScoringMethod scoring : {ScoringMethod::in_sample, ScoringMethod::cross_fit}) {
      DetectorConfig cfg = small_config();
      cfg.seed = seed;
      cfg.refine.scoring = scoring;
      const auto r = run(bank, cfg);
      int tp = 0, fp = 0;
      for (int64_t i : rejected_set(r)) (i >= n_good ? tp : fp) += 1;
      std::printf("seed %llu %s: %zu rounds (%s), rejected %d of 8 contaminants and %d good "
                  "images\n", (unsigned long long)seed, name_of(scoring), r.rounds.size(),
                  r.stop_reason.c_str(), tp, fp);
      for (const auto& rec : r.rounds) {
        std::vector<double> sorted = rec.scores;
        std::sort(sorted.rbegin(), sorted.rend());
        std::printf("  round %d: tau %.2f, rejected %zu:", rec.round, rec.tau, rec.rejected.size());
        for (size_t j = 0; j < std::min<size_t>(12, sorted.size()); ++j) std::printf(" %.2f", sorted[j]);
        std::printf("\n");
      }
      // Measured: 8 of 8 on every seed, scoring and path.
      EXPECT_GE(tp, 7) << name_of(scoring) << " seed " << seed;
      // Q3 + 1.5 IQR flags a few percent of clean scores every round (DESIGN.md's pitfall).
      // Cross-fit (the default): measured at most 3 of 40 (seed 2), bound 4. In-sample (the
      // paper's scoring): measured up to 10 of 40 (seed 2: round 1 rejects exactly the 8
      // contaminants, then rounds 2-4 peel 4, 3 and 3 clean images off the tail as each
      // retrained model re-ranks the clean set). That is a real weakness, not noise; this bound
      // only keeps it from growing, and a rejection rule calibrated against clean scores
      // (issue 15) is the fix. Identical counts on all five forced kernel paths.
      const int fp_bound = scoring == ScoringMethod::cross_fit ? n_good / 10 : n_good / 4;
      EXPECT_LE(fp, fp_bound) << name_of(scoring) << " seed " << seed;
      EXPECT_EQ(r.retained.size() + r.rejected.size(), size_t(n_good + 8));
      // The shipped statistics and threshold come from the retained images only.
      EXPECT_EQ(r.calibration_images, r.retained);
      EXPECT_TRUE(std::isfinite(r.threshold));
    }
  }
}

// An outlier planted twice: in-sample, the flow trains on both copies and scores them like
// normal images; cross-fit keeps exact duplicates in one fold, so the model scoring the
// outlier never saw it.
TEST(Refinement, PlantedDuplicateScoresHighCrossFitAndLowInSample) {
  const int64_t n_good = 30;
  auto rows = make_rows(n_good, {}, 2);
  // One outlier: every position shifted, a mode of its own the flow can memorise.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd;
  std::vector<float> outlier;
  for (int64_t p = 0; p < HW; ++p)
    for (int64_t c = 0; c < C; ++c)
      outlier.push_back(std::sin(0.7f * p + c) + 0.3f * nd(rng) + (c % 2 ? 1.0f : -1.0f));
  rows.insert(rows.end(), outlier.begin(), outlier.end());
  rows.insert(rows.end(), outlier.begin(), outlier.end());
  const int64_t n = n_good + 2;
  PatchBank bank(rows, n, C, H, W, 8, Device::cpu);
  EXPECT_EQ(bank.image_fingerprint(n - 1), bank.image_fingerprint(n - 2));
  DetectorConfig cfg = small_config();
  cfg.refine.max_rounds = 1;
  // A flow with room and steps enough to fit the outlier's mode when it trains on it.
  cfg.train.budget = 6000;
  cfg.train.meta_lr = 1e-2;
  cfg.flow.hidden_factor = 8;
  auto rank_of_outlier = [&](const RoundRecord& rec) {
    const size_t j = std::find(rec.scored.begin(), rec.scored.end(), n - 1) - rec.scored.begin();
    int rank = 0;
    for (double s : rec.scores) rank += s > rec.scores[j];
    return std::make_pair(rec.scores[j], rank);
  };
  // Whether in-sample training memorises the outlier depends on the optimisation path (seeds
  // 0-5 gave it a rank of 0 to 30, and float rounding alone can flip one seed), so the
  // contrast is checked over several seeds: cross-fit rejects it every time, in-sample
  // scoring misses it at least half of the time.
  int in_sample_missed = 0;
  const int n_seeds = 4;
  for (int seed = 0; seed < n_seeds; ++seed) {
    cfg.seed = uint64_t(seed);
    cfg.refine.scoring = ScoringMethod::in_sample;
    const auto in = run(bank, cfg);
    cfg.refine.scoring = ScoringMethod::cross_fit;
    const auto cf = run(bank, cfg);
    const auto [s_in, rank_in] = rank_of_outlier(in.rounds[0]);
    const auto [s_cf, rank_cf] = rank_of_outlier(cf.rounds[0]);
    std::printf("seed %d, outlier: in-sample score %.2f (rank %d, tau %.2f), cross-fit score "
                "%.2f (rank %d, tau %.2f)\n", seed, s_in, rank_in, in.rounds[0].tau, s_cf,
                rank_cf, cf.rounds[0].tau);
    // Cross-fit: the two copies are the most anomalous images and are rejected.
    EXPECT_LE(rank_cf, 1) << "seed " << seed;
    EXPECT_GT(s_cf, cf.rounds[0].tau) << "seed " << seed;
    // In-sample: the flow vouches for them, below the rejection threshold.
    in_sample_missed += s_in < in.rounds[0].tau;
  }
  EXPECT_GE(2 * in_sample_missed, n_seeds)
      << "in-sample scoring rejected the memorised outlier in most seeds";
}

TEST(Refinement, NonFiniteScoresAreRejectedAndReportedEvenAboveAQuarter) {
  const int64_t n_good = 14, n_bad = 6;  // 30% of the images overflow the NLL
  auto rows = make_rows(n_good + n_bad, {}, 3);
  for (int64_t i = n_good; i < n_good + n_bad; ++i) rows[(i * HW + 5) * C + 1] = 3e19f;
  ChannelNorm unit{std::vector<float>(C, 0.0f), std::vector<float>(C, 1.0f)};
  PatchBank bank(rows, n_good + n_bad, C, H, W, 8, Device::cpu, unit);
  DetectorConfig cfg = small_config();
  const auto r = run(bank, cfg);
  ASSERT_FALSE(r.rounds.empty());
  EXPECT_EQ(r.rounds[0].nonfinite, n_bad);
  const auto rej = rejected_set(r);
  for (int64_t i = n_good; i < n_good + n_bad; ++i) {
    EXPECT_TRUE(rej.count(i)) << "overflowing image " << i << " not rejected";
    const auto it = std::find_if(r.rejected.begin(), r.rejected.end(),
                                 [&](const Rejection& x) { return x.image == i; });
    EXPECT_EQ(it->round, 1);
    EXPECT_TRUE(std::isinf(it->score));
  }
  // Training masked their rows instead of stopping, and named them.
  EXPECT_EQ(std::set<int64_t>(r.flagged.begin(), r.flagged.end()).size(), size_t(n_bad));
  EXPECT_TRUE(std::isfinite(r.threshold));
}

TEST(Refinement, MinKeepStopsRejectionAndSaysSo) {
  const int64_t n_good = 20;
  PatchBank bank(make_rows(n_good, std::vector<float>(5, 3.0f), 4), n_good + 5, C, H, W, 8,
                 Device::cpu);
  DetectorConfig cfg = small_config();
  cfg.refine.min_keep = 0.92;  // at most 2 of 25 may go (ceil(0.92 * 25) = 23 kept)
  const auto r = run(bank, cfg);
  EXPECT_EQ(r.stop_reason, "min_keep");
  EXPECT_EQ(r.retained.size(), 23u);
  EXPECT_TRUE(r.rounds.back().min_keep_reached);
  // The two that went are the two highest scores of that round.
  const auto& rec = r.rounds.back();
  std::vector<double> sorted = rec.scores;
  std::sort(sorted.rbegin(), sorted.rend());
  for (const auto& x : r.rejected) EXPECT_GE(x.score, sorted[1]);
}

TEST(Refinement, SoftModeDownWeightsContaminantsAndListsThem) {
  const int64_t n_good = 30;
  for (uint64_t seed = 0; seed < 5; ++seed) {
    PatchBank bank(make_rows(n_good, std::vector<float>(5, 2.5f), 5 + seed), n_good + 5, C, H,
                   W, 8, Device::cpu);
    DetectorConfig cfg = small_config();
    cfg.seed = seed;
    cfg.refine.soft = true;
    const auto r = run(bank, cfg);
    // Nothing is dropped; the down-weighted images are listed with weights in (0, 1).
    EXPECT_EQ(r.retained.size(), size_t(n_good + 5));
    int tp = 0;
    for (const auto& x : r.rejected) {
      EXPECT_GT(x.weight, -1e-12);
      EXPECT_LT(x.weight, 1.0);
      tp += x.image >= n_good;
    }
    std::printf("seed %llu: %d of 5 contaminants down-weighted, %zu images in all\n",
                (unsigned long long)seed, tp, r.rejected.size());
    EXPECT_GE(tp, 4) << "seed " << seed;  // measured 5 of 5 on seeds 0-4, all five paths
    for (const auto& rec : r.rounds) EXPECT_EQ(rec.weights.size(), rec.scored.size());
  }
}

TEST(Refinement, SameResultsForAnyWorkerCountAndRunToRun) {
  const int64_t n_good = 24;
  PatchBank bank(make_rows(n_good, std::vector<float>(4, 2.5f), 6), n_good + 4, C, H, W, 8,
                 Device::cpu);
  DetectorConfig cfg = small_config();
  cfg.refine.scoring = ScoringMethod::cross_fit;
  cfg.train.mode = TrainMode::maml;
  cfg.train.budget = 120;
  cfg.train.support = 3, cfg.train.query = 3, cfg.train.meta_batch = 2, cfg.train.n_final = 5;
  // Every job runs single-threaded BLAS whatever the worker count or the caller's BLAS setting,
  // so the serial path (1 worker) under a 2-thread BLAS must give the same bits as 2 or 3
  // workers: by construction, on every CPU (a 2-thread BLAS alone changes the rounding on
  // Zen's kernels; FlowApi.ThreadCountChangesOnlyRoundingAndRunsRepeatBitForBit).
  set_compute_threads(2);
  const auto serial = run(bank, cfg, 1);
  set_compute_threads(available_cores());
  const auto a = run(bank, cfg, 2), b = run(bank, cfg, 2), c = run(bank, cfg, 3);
  EXPECT_EQ(a.model.taps[0].theta, b.model.taps[0].theta);
  for (const RefinementResult* r : {&c, &serial}) {
    EXPECT_EQ(a.model.taps[0].theta, r->model.taps[0].theta);
    ASSERT_EQ(a.rounds.size(), r->rounds.size());
    for (size_t i = 0; i < a.rounds.size(); ++i) EXPECT_EQ(a.rounds[i].scores, r->rounds[i].scores);
    EXPECT_EQ(a.calibration_scores, r->calibration_scores);
  }
}

// A run stopped right after a round's checkpoint and resumed from it ends in the same model,
// scores and rejections, bit for bit, as one never interrupted (in-process; the CLI test
// tests/python/test_resume.py kills a real run with SIGKILL).
TEST(Refinement, ResumedFromACheckpointEqualsUninterrupted) {
  const int64_t n_good = 24;
  PatchBank bank(make_rows(n_good, std::vector<float>(5, 2.5f), 8), n_good + 5, C, H, W, 8,
                 Device::cpu);
  for (ScoringMethod scoring : {ScoringMethod::in_sample, ScoringMethod::cross_fit}) {
    DetectorConfig cfg = small_config();
    cfg.refine.scoring = scoring;
    cfg.train.mode = TrainMode::maml;
    cfg.train.budget = 100;
    cfg.train.support = 3, cfg.train.query = 3, cfg.train.meta_batch = 2, cfg.train.n_final = 4;
    RefineOptions base;
    base.baseline = true;
    const auto full = refine({&bank}, cfg, EpisodeScheduler::factory(), Device::cpu, base);
    ASSERT_GE(full.rounds.size(), 2u) << name_of(scoring);
    for (int stop_after = 1; stop_after <= int(full.rounds.size()); ++stop_after) {
      TempDir tmp;
      RefineOptions o = base;
      o.checkpoint = [&](const RefineCheckpoint& c) {
        save_refine_checkpoint(tmp.path(), c);
        if (c.rounds_done == stop_after) throw std::runtime_error("killed");
      };
      EXPECT_THROW(refine({&bank}, cfg, EpisodeScheduler::factory(), Device::cpu, o),
                   std::runtime_error);
      const auto cp = load_refine_checkpoint(tmp.path());
      ASSERT_TRUE(cp.has_value());
      EXPECT_EQ(cp->rounds_done, stop_after);
      RefineOptions r = base;
      r.resume = &*cp;
      const auto resumed = refine({&bank}, cfg, EpisodeScheduler::factory(), Device::cpu, r);
      EXPECT_EQ(resumed.model.taps[0].theta, full.model.taps[0].theta) << name_of(scoring) << stop_after;
      EXPECT_EQ(resumed.calibration_scores, full.calibration_scores) << name_of(scoring) << stop_after;
      EXPECT_EQ(resumed.threshold, full.threshold);
      EXPECT_EQ(resumed.retained, full.retained);
      ASSERT_EQ(resumed.rejected.size(), full.rejected.size());
      for (size_t i = 0; i < full.rejected.size(); ++i)
        EXPECT_EQ(resumed.rejected[i].image, full.rejected[i].image);
      EXPECT_EQ(resumed.baseline.taps[0].theta, full.baseline.taps[0].theta);
      // Another config's checkpoint is refused.
      DetectorConfig other = cfg;
      other.train.budget = 101;
      EXPECT_THROW(refine({&bank}, other, EpisodeScheduler::factory(), Device::cpu, r), InputError);
    }
  }
}
