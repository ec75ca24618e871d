// Refinement's steps: planning a run, one round's training, scoring, rejection or weighting and
// stop checks, and the shipped detector with its calibration.
#include "engine/detector/refine_steps.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <span>

#include "core/error.h"
#include "kernels/quantiles.h"
#include "engine/detector/refine_resume.h"
#include "engine/detector/refine_seeds.h"
#include "engine/detector/threshold.h"
#include "engine/io/sha256.h"

namespace mirad {

namespace {

// Per image, a fingerprint of its features over every tap: equal fingerprints are copies.
std::vector<uint64_t> image_fingerprints(const std::vector<const PatchBank*>& banks, int64_t n) {
  std::vector<uint64_t> keys(n);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t key = 0;
    for (const PatchBank* b : banks) key = key * 0x100000001b3ULL ^ b->image_fingerprint(i);
    keys[i] = key;
  }
  return keys;
}

// Folds: a seeded permutation of the images dealt round-robin, fixed for every round. Exact
// duplicates (equal features) form one unit and share a fold, so that no copy vouches for
// another.
std::vector<int> assign_folds(const std::vector<uint64_t>& keys, int folds, uint64_t seed) {
  std::map<uint64_t, std::vector<int64_t>> groups;
  std::vector<uint64_t> order;  // first-seen order of the fingerprints
  for (int64_t i = 0; i < int64_t(keys.size()); ++i) {
    if (!groups.count(keys[i])) order.push_back(keys[i]);
    groups[keys[i]].push_back(i);
  }
  const int64_t G = int64_t(order.size());
  std::vector<int64_t> perm(G);
  for (int64_t g = 0; g < G; ++g) perm[g] = g;
  uint64_t s = mix_seed(seed, kFoldSeedTag, 0, 0);
  for (int64_t g = G - 1; g > 0; --g) {
    s = mix_seed(s, uint64_t(g), 1, 2);
    std::swap(perm[g], perm[int64_t(s % uint64_t(g + 1))]);
  }
  std::vector<int> fold_of(keys.size(), 0);
  for (int64_t r = 0; r < G; ++r)
    for (int64_t i : groups[order[perm[r]]]) fold_of[i] = int(r % folds);
  return fold_of;
}

std::string make_run_key(const DetectorConfig& cfg, const std::vector<uint64_t>& keys,
                         const RefineRun& run) {
  std::string identity = cfg.to_json().dump();
  for (uint64_t key : keys) identity += fmt::format(" {:x}", key);
  for (int64_t i : run.keep) identity += fmt::format(" k{}", i);
  for (int64_t i : run.drop) identity += fmt::format(" r{}", i);
  identity += fmt::format(" baseline{}", run.opt->baseline);
  return sha256_hex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(identity.data()),
                                             identity.size()));
}

// Soft mode: the weights of the given pool images.
std::vector<double> weights_for(const RefineRun& run, const RefineCheckpoint& st,
                                const std::vector<int64_t>& images) {
  std::vector<double> w;
  if (!run.soft) return w;
  for (int64_t i : images)
    w.push_back(st.weights[std::lower_bound(run.pool.begin(), run.pool.end(), i) -
                           run.pool.begin()]);
  return w;
}

// The baseline: every pool image, no rejection, scored in-sample.
TrainSpec baseline_spec(const RefineRun& run) {
  TrainSpec b;
  b.images = run.pool;
  b.tag = kBaselineSeedTag;
  b.phase = "baseline";
  b.score = run.pool;
  return b;
}

// Keeps a baseline model with its statistics and threshold from its in-sample maps.
void keep_baseline(const RefineRun& run, RefineCheckpoint& st, ModelSet model,
                   const TapMaps& maps) {
  st.baseline = std::move(model);
  std::vector<double> s;
  st.baseline_stats = calibrate_scores(maps, run.cfg->score, s);
  st.baseline_threshold = decision_threshold(s, run.cfg->threshold);
  st.has_baseline = true;
}

// The maps of a subset of the scored images (positions into `maps`).
TapMaps subset(const TapMaps& maps, const std::vector<size_t>& pos) {
  TapMaps out;
  out.grids = maps.grids;
  out.n_images = int64_t(pos.size());
  for (size_t t = 0; t < maps.nll.size(); ++t) {
    const int64_t hw = maps.grids[t].size();
    std::vector<float> v;
    v.reserve(pos.size() * hw);
    for (size_t p : pos)
      v.insert(v.end(), maps.nll[t].begin() + p * hw, maps.nll[t].begin() + (p + 1) * hw);
    out.nll.push_back(std::move(v));
  }
  return out;
}

// Merges per-fold maps back into the order of `images`.
TapMaps merge_folds(const std::vector<int64_t>& images, const std::vector<int>& fold_of_image,
                    const std::vector<TapMaps>& fold_maps,
                    const std::vector<std::vector<int64_t>>& fold_images) {
  TapMaps out;
  out.grids = fold_maps.empty() ? std::vector<Grid>{} : fold_maps[0].grids;
  for (const auto& fm : fold_maps)
    if (!fm.grids.empty()) out.grids = fm.grids;
  out.n_images = int64_t(images.size());
  out.nll.resize(out.grids.size());
  std::vector<size_t> next(fold_maps.size(), 0);
  for (int64_t img : images) {
    const int k = fold_of_image[img];
    const size_t p = next[k]++;
    CHECK_THROW(fold_images[k][p] == img);
    for (size_t t = 0; t < out.grids.size(); ++t) {
      const int64_t hw = out.grids[t].size();
      const auto& src = fold_maps[k].nll[t];
      out.nll[t].insert(out.nll[t].end(), src.begin() + p * hw, src.begin() + (p + 1) * hw);
    }
  }
  return out;
}

// Cross-fit: one model per fold, trained on the other folds and scoring its own.
double train_cross_fit_round(const RefineRun& run, DetectorJobs& jobs, RefineCheckpoint& st,
                             int r) {
  const int K = run.folds;
  const std::vector<int64_t>& R = st.retained;
  std::vector<TapMaps> fold_maps(K);
  std::vector<std::vector<int64_t>> fold_images(K);
  std::vector<TrainSpec> specs;
  std::vector<int> spec_fold;
  for (int k = 0; k < K; ++k) {
    TrainSpec sp;
    for (int64_t i : R) (run.fold_of[i] == k ? fold_images[k] : sp.images).push_back(i);
    if (fold_images[k].empty()) continue;
    sp.weights = weights_for(run, st, sp.images);
    sp.warm = st.has_prev[k] ? &st.prev[k] : nullptr;
    sp.tag = round_seed_tag(r, k);
    sp.phase = fmt::format("round {} fold {}/{}", r, k + 1, K);
    sp.score = fold_images[k];
    specs.push_back(std::move(sp));
    spec_fold.push_back(k);
  }
  auto outs = jobs.train(specs);
  double loss = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    const int k = spec_fold[i];
    st.prev[k] = std::move(outs[i].model);
    st.has_prev[k] = 1;
    fold_maps[k] = std::move(outs[i].maps);
    loss += outs[i].loss / double(outs.size());
  }
  st.last_maps = merge_folds(R, run.fold_of, fold_maps, fold_images);
  return loss;
}

// In-sample: one model on the retained set, scoring it. Round 1's model is trained on the whole
// pool without rejection, so it is the baseline when one is asked for.
double train_in_sample_round(const RefineRun& run, DetectorJobs& jobs, RefineCheckpoint& st,
                             int r) {
  TrainSpec sp;
  sp.images = st.retained;
  sp.weights = weights_for(run, st, st.retained);
  sp.warm = st.has_prev[0] ? &st.prev[0] : nullptr;
  sp.tag = round_seed_tag(r, 0);
  sp.phase = fmt::format("round {}", r);
  sp.score = st.retained;
  auto outs = jobs.train({sp});
  st.last_model = std::move(outs[0].model);
  st.prev[0] = st.last_model;
  st.has_prev[0] = 1;
  st.last_maps = std::move(outs[0].maps);
  if (r == 1 && run.opt->baseline) keep_baseline(run, st, st.last_model, st.last_maps);
  return outs[0].loss;
}

}  // namespace

RefineRun plan_run(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
                   const RefineOptions& opt) {
  CHECK_INPUT(!banks.empty(), "refinement: no feature taps");
  cfg.check_training_budget();
  RefineRun run;
  run.banks = &banks, run.cfg = &cfg, run.opt = &opt;
  const int64_t n_all = run.n_images = banks[0]->n_images();
  for (const PatchBank* b : banks)
    CHECK_INPUT(b->n_images() == n_all, "refinement: taps hold {} and {} images", n_all,
                b->n_images());
  run.keep = std::set<int64_t>(opt.always_keep.begin(), opt.always_keep.end());
  run.drop = std::set<int64_t>(opt.always_reject.begin(), opt.always_reject.end());
  for (int64_t i : run.keep)
    CHECK_INPUT(i >= 0 && i < n_all, "refinement: keep index {} out of range", i);
  for (int64_t i : run.drop) {
    CHECK_INPUT(i >= 0 && i < n_all, "refinement: reject index {} out of range", i);
    CHECK_INPUT(!run.keep.count(i), "refinement: image {} is both kept and rejected by review", i);
  }
  for (int64_t i = 0; i < n_all; ++i) {
    if (run.drop.count(i))
      run.reviewed.push_back({i, 0, std::numeric_limits<double>::quiet_NaN(), 0, 0});
    else
      run.pool.push_back(i);
  }
  CHECK_INPUT(run.pool.size() >= 2, "refinement: {} training images left; at least 2 are needed",
              run.pool.size());
  run.cross = cfg.refine.scoring == ScoringMethod::cross_fit;
  run.soft = cfg.refine.soft;
  run.folds = run.cross ? int(cfg.refine.folds) : 1;
  const std::vector<uint64_t> keys = image_fingerprints(banks, n_all);
  run.fold_of = run.cross ? assign_folds(keys, run.folds, cfg.seed) : std::vector<int>(n_all, 0);
  run.run_key = make_run_key(cfg, keys, run);
  run.n_min = std::max<int64_t>(
      2, int64_t(std::ceil(cfg.refine.min_keep * double(run.pool.size()) - 1e-9)));
  return run;
}

RefineCheckpoint start_state(const RefineRun& run, DetectorJobs& jobs) {
  const DetectorConfig& cfg = *run.cfg;
  const RefineOptions& opt = *run.opt;
  RefineCheckpoint st;
  if (!opt.resume) {
    st.run_key = run.run_key;
    st.retained = run.pool;
    if (run.soft) st.weights.assign(run.pool.size(), 1.0);
    st.prev.resize(run.folds);
    st.has_prev.assign(run.folds, 0);
    st.rejected = run.reviewed;
    st.stop_reason = cfg.refine.max_rounds == 0 ? "no_rounds" : "max_rounds";
    st.loop_done = cfg.refine.max_rounds == 0;
    return st;
  }
  CHECK_INPUT(opt.resume->run_key == run.run_key,
              "refinement: the checkpoint belongs to another run (other config, images or "
              "review lists); remove it to start over");
  // The run key covers the config and images, not the checkpoint's own state: that must be
  // one this run can reach, or a resumed run continues from an edit (issue 13, 1 and 14).
  ResumeFrame frame;
  frame.n_images = run.n_images;
  frame.pool = run.pool;
  frame.reviewed = run.reviewed;
  frame.folds = run.folds;
  frame.cross = run.cross, frame.soft = run.soft, frame.baseline = opt.baseline;
  frame.max_rounds = int(cfg.refine.max_rounds);
  const auto& banks = *run.banks;
  for (size_t t = 0; t < banks.size(); ++t) {
    frame.flows.push_back(tap_flow_config(cfg, banks[t]->channels(), int64_t(t)));
    frame.grids.push_back({banks[t]->height(), banks[t]->width()});
  }
  check_resume_state(*opt.resume, frame);
  st = *opt.resume;
  jobs.restore_flagged(st.flagged);
  return st;
}

double train_round(const RefineRun& run, DetectorJobs& jobs, RefineCheckpoint& st, int round) {
  const double loss = run.cross ? train_cross_fit_round(run, jobs, st, round)
                                : train_in_sample_round(run, jobs, st, round);
  st.last_scored = st.retained;
  return loss;
}

std::vector<double> score_round(const RefineRun& run, const RefineCheckpoint& st,
                                RoundRecord& rec) {
  calibrate_scores(st.last_maps, run.cfg->score, rec.scores);
  std::vector<double> finite;
  for (double s : rec.scores)
    if (std::isfinite(s)) finite.push_back(s);
    else ++rec.nonfinite;
  RejectionThreshold th{std::numeric_limits<double>::infinity(), "every score is non-finite"};
  if (!finite.empty()) th = rejection_threshold(finite, run.cfg->refine.rule, run.cfg->rule_k());
  rec.tau = th.tau;
  rec.rule_detail = th.detail;
  return finite;
}

std::vector<int64_t> down_weight(const RefineRun& run, RefineCheckpoint& st, RoundRecord& rec,
                                 const std::vector<double>& finite) {
  // w = exp(-max(0, s - tau) / IQR): sign-safe for NLL scores, 1 at and below tau.
  const QuartileStats q = finite.empty() ? QuartileStats{}
                                         : quartiles_cpu(finite.data(), int64_t(finite.size()));
  const double iqr = q.iqr > 0 ? q.iqr : 1.0;
  const std::vector<int64_t>& R = st.retained;  // the pool: soft mode drops nothing
  std::vector<int64_t> down;
  for (size_t j = 0; j < R.size(); ++j) {
    const double s = rec.scores[j];
    double w = std::isfinite(s) ? std::exp(-std::max(0.0, s - rec.tau) / iqr) : 0.0;
    if (run.keep.count(R[j])) w = 1.0;
    st.weights[j] = w;
    rec.weights.push_back(w);
    if (w < 1.0) down.push_back(R[j]), rec.rejected.push_back(R[j]);
  }
  return down;
}

std::set<int64_t> decide_rejections(const RefineRun& run, RefineCheckpoint& st,
                                    RoundRecord& rec) {
  const std::vector<int64_t>& R = st.retained;
  std::vector<std::pair<double, int64_t>> cand;  // (score, image) with NaN as +Inf
  for (size_t j = 0; j < R.size(); ++j) {
    if (run.keep.count(R[j])) continue;
    const double s = rec.scores[j];
    if (!std::isfinite(s) || s > rec.tau)
      cand.push_back({std::isnan(s) ? std::numeric_limits<double>::infinity() : s, R[j]});
  }
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  const int64_t room = std::max<int64_t>(0, int64_t(R.size()) - run.n_min);
  if (int64_t(cand.size()) > room) {
    cand.resize(room);
    rec.min_keep_reached = true;
  }
  std::set<int64_t> out;
  for (const auto& [s, img] : cand) {
    out.insert(img);
    rec.rejected.push_back(img);
    st.rejected.push_back({img, rec.round, s, rec.tau, 0.0});
  }
  return out;
}

void record_round(RefineCheckpoint& st, RoundRecord& rec,
                  std::chrono::steady_clock::time_point start) {
  rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  st.rounds.push_back(rec);
}

void stop_if_weights_settled(const RefineRun& run, RefineCheckpoint& st,
                             const std::vector<int64_t>& down) {
  const bool same = down == st.last_down;
  st.last_down = down;
  if (!same) return;
  st.stop_reason = "converged";
  st.final_ready = !run.cross;  // the in-sample model saw exactly these weights
  st.loop_done = true;
}

void drop_rejected_or_stop(const RefineRun& run, RefineCheckpoint& st, const RoundRecord& rec,
                           const std::set<int64_t>& out) {
  if (out.empty()) {
    st.stop_reason = rec.min_keep_reached ? "min_keep" : "converged";
    st.final_ready = !run.cross;  // the in-sample model was trained on the final set
    st.loop_done = true;
    return;
  }
  std::vector<int64_t> next;
  for (int64_t i : st.retained)
    if (!out.count(i)) next.push_back(i);
  st.retained = std::move(next);
  if (rec.min_keep_reached) {
    st.stop_reason = "min_keep";
    st.loop_done = true;
  }
}

void save_state(const RefineRun& run, const DetectorJobs& jobs, RefineCheckpoint& st) {
  if (!run.opt->checkpoint) return;
  const auto& f = jobs.flagged();
  st.flagged.assign(f.begin(), f.end());
  run.opt->checkpoint(st);
}

void train_final_model(const RefineRun& run, DetectorJobs& jobs, RefineCheckpoint& st) {
  std::vector<TrainSpec> specs;
  if (!st.final_ready) {
    const ModelSet* warm = nullptr;
    for (int k = 0; k < run.folds && !warm; ++k)
      if (st.has_prev[k]) warm = &st.prev[k];
    TrainSpec sp;
    sp.images = st.retained;
    sp.weights = weights_for(run, st, st.retained);
    sp.warm = warm;
    sp.tag = kFinalModelSeedTag;
    sp.phase = "final";
    specs.push_back(std::move(sp));
  }
  // The baseline trains alongside: the jobs run side by side.
  const bool baseline = run.opt->baseline && !st.has_baseline;
  if (baseline) specs.push_back(baseline_spec(run));
  if (specs.empty()) return;
  auto outs = jobs.train(specs);
  if (!st.final_ready) st.last_model = std::move(outs.front().model);
  if (baseline) keep_baseline(run, st, std::move(outs.back().model), outs.back().maps);
}

void calibrate_detector(const RefineRun& run, DetectorJobs& jobs, const RefineCheckpoint& st,
                        RefinementResult& res) {
  // Calibration: in-sample scores of the final model, or the out-of-fold scores of the last
  // round restricted to the images still retained.
  const std::set<int64_t> last_down(st.last_down.begin(), st.last_down.end());
  std::vector<int64_t> calib;
  for (int64_t i : st.retained)
    if (!run.soft || !last_down.count(i)) calib.push_back(i);
  TapMaps calib_maps;
  if (!run.cross && !run.soft && st.final_ready) {
    calib_maps = st.last_maps;  // nothing was rejected after these in-sample maps were made
  } else if (run.cross && !st.last_scored.empty()) {
    std::vector<size_t> pos;
    for (int64_t i : calib)
      pos.push_back(std::lower_bound(st.last_scored.begin(), st.last_scored.end(), i) -
                    st.last_scored.begin());
    calib_maps = subset(st.last_maps, pos);
  } else {
    calib_maps = jobs.score(res.model, calib);
  }
  res.stats = calibrate_scores(calib_maps, run.cfg->score, res.calibration_scores);
  res.calibration_images = calib;
  res.threshold =
      decision_threshold(res.calibration_scores, run.cfg->threshold, &res.threshold_detail);
}

void report_down_weighted(RefinementResult& res) {
  if (res.rounds.empty()) return;
  const RoundRecord& last = res.rounds.back();
  for (size_t j = 0; j < last.scored.size(); ++j)
    if (last.weights[j] < 1.0)
      res.rejected.push_back({last.scored[j], last.round, last.scores[j], last.tau, last.weights[j]});
}

}  // namespace mirad
