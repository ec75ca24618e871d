// The steps of refinement (DESIGN.md §4), each named for what the method does; refine() in
// refinement.cpp runs them. A run is planned once (pool, review, folds, stopping floor), then
// each round trains, scores, decides its rejections (hard) or weights (soft) and checks whether
// to stop; the shipped detector and its calibration come last.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "engine/detector/detector_jobs.h"
#include "engine/detector/refinement.h"

namespace mirad {

// What a run fixes before its first round; the rounds read it and never change it.
struct RefineRun {
  const std::vector<const PatchBank*>* banks = nullptr;
  const DetectorConfig* cfg = nullptr;
  const RefineOptions* opt = nullptr;
  int64_t n_images = 0;                // bank images
  std::set<int64_t> keep, drop;        // the review: never rejected, excluded from the start
  std::vector<int64_t> pool;           // ascending: every image the review did not exclude
  std::vector<Rejection> reviewed;     // the review's exclusions, reported as round 0
  bool cross = false, soft = false;
  int folds = 1;                       // fold models per round (1 without cross-fit)
  std::vector<int> fold_of;            // per bank image
  int64_t n_min = 2;                   // min_keep: never fewer retained images than this
  std::string run_key;                 // config + images + review: whose checkpoint fits
};

// Checks the banks and the review, and fixes the pool, the folds and the run key.
RefineRun plan_run(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
                   const RefineOptions& opt);
// The state before round 1, or the resumed checkpoint after checking it against the run.
RefineCheckpoint start_state(const RefineRun& run, DetectorJobs& jobs);

// Trains the round's model(s) and leaves the scores' maps in st.last_maps (out of fold with
// cross-fit); returns the mean last-step training loss.
double train_round(const RefineRun& run, DetectorJobs& jobs, RefineCheckpoint& st, int round);
// Scores the round's images from st.last_maps and finds tau; returns the finite scores.
std::vector<double> score_round(const RefineRun& run, const RefineCheckpoint& st,
                                RoundRecord& rec);
// Soft mode: the weight of every pool image from its score; returns the down-weighted images.
std::vector<int64_t> down_weight(const RefineRun& run, RefineCheckpoint& st, RoundRecord& rec,
                                 const std::vector<double>& finite);
// Hard mode: non-finite scores first, then the highest above tau, down to min_keep; returns the
// rejected images (also recorded in rec and st.rejected).
std::set<int64_t> decide_rejections(const RefineRun& run, RefineCheckpoint& st, RoundRecord& rec);
// Records the round and its time.
void record_round(RefineCheckpoint& st, RoundRecord& rec,
                  std::chrono::steady_clock::time_point start);
// Stop checks. Soft: the down-weighted set did not change. Hard: nothing rejected (converged, or
// min_keep), else the retained set shrinks, and min_keep ends the rounds.
void stop_if_weights_settled(const RefineRun& run, RefineCheckpoint& st,
                             const std::vector<int64_t>& down);
void drop_rejected_or_stop(const RefineRun& run, RefineCheckpoint& st, const RoundRecord& rec,
                           const std::set<int64_t>& out);
// Hands the state to the checkpoint callback, if any.
void save_state(const RefineRun& run, const DetectorJobs& jobs, RefineCheckpoint& st);

// The shipped detector on the final retained set (unless the last round's model is it) and,
// when asked for and not yet trained, the baseline beside it.
void train_final_model(const RefineRun& run, DetectorJobs& jobs, RefineCheckpoint& st);
// The shipped detector's score statistics and decision threshold from its calibration images.
void calibrate_detector(const RefineRun& run, DetectorJobs& jobs, const RefineCheckpoint& st,
                        RefinementResult& res);
// Soft mode: the last round's down-weighted images, listed as rejections in the report.
void report_down_weighted(RefinementResult& res);

}  // namespace mirad
