// Iterative refinement (DESIGN.md §4): rounds of train -> score every retained training image
// -> tau = rule(scores) -> reject above tau, until nothing is rejected, max_rounds, or
// min_keep. In-sample scoring (the paper) or cross-fit (image i scored by a model whose
// training and adaptation exclude i's fold; every statistic then comes from out-of-fold
// scores). Soft mode down-weights instead of dropping. Ends with the shipped detector: one flow
// per tap, its score statistics and the decision threshold.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/buffer.h"
#include "engine/config/detector_config.h"
#include "engine/training/episodes.h"
#include "engine/flow/flow_config.h"
#include "engine/io/folder_lock.h"
#include "engine/flow/optimizer.h"
#include "engine/training/patch_bank.h"
#include "engine/detector/model_set.h"
#include "engine/detector/scoring.h"

namespace mirad {

class TapTrainer;

// The flow of a tap, from the config and the tap's channel count.
FlowConfig tap_flow_config(const DetectorConfig& cfg, int64_t channels, int64_t tap_index);

struct RoundRecord {
  int round = 0;
  std::vector<int64_t> scored;    // bank images scored (the pool at the round's start)
  std::vector<double> scores;     // their hybrid scores (out of fold with cross-fit)
  std::vector<double> weights;    // soft mode: the weights the scores give (else empty)
  double tau = 0;
  std::string rule_detail;
  std::vector<int64_t> rejected;  // hard mode: rejected this round; soft: weight < 1
  int64_t nonfinite = 0;          // scores that were NaN/Inf (always rejected)
  bool min_keep_reached = false;
  double train_loss = 0;          // mean last-step loss over the round's models and taps
  double seconds = 0;
};

struct Rejection {
  int64_t image = 0;
  int round = 0;
  double score = 0, tau = 0, weight = 0;  // weight: soft mode only
};

struct RefinementResult {
  std::vector<RoundRecord> rounds;
  std::vector<int64_t> retained;   // sorted
  std::vector<Rejection> rejected; // in the order of rejection (soft: the last round's list)
  std::vector<int64_t> flagged;    // images with non-finite training loss (suspects)
  std::string stop_reason;         // "converged", "max_rounds", "min_keep", "no_rounds"
  ModelSet model;
  ScoreStats stats;
  std::vector<int64_t> calibration_images;  // the retained images behind stats
  std::vector<double> calibration_scores;   // and their scores
  double threshold = 0;
  std::string threshold_detail;
  // With RefineOptions::baseline: a detector trained on every image, no rejection.
  bool has_baseline = false;
  ModelSet baseline;
  ScoreStats baseline_stats;
  double baseline_threshold = 0;
};

// Everything refinement knows at the end of a round: enough to continue, after the process is
// killed, to the same result bit for bit (every job is seeded by its round and fold, so no
// random state runs across rounds).
struct RefineCheckpoint {
  std::string run_key;      // config + images + review; a checkpoint of another run is refused
  int rounds_done = 0;
  bool loop_done = false;   // the rounds are over; only the final detector is left
  bool final_ready = false; // ... and the last round's model is it
  std::string stop_reason;
  std::vector<RoundRecord> rounds;
  std::vector<Rejection> rejected;
  std::vector<int64_t> retained;
  std::vector<double> weights;       // soft mode: per pool image
  std::vector<int64_t> last_down;    // soft mode: down-weighted in the last round
  std::vector<ModelSet> prev;        // per fold (one without cross-fit): the last models
  std::vector<uint8_t> has_prev;
  TapMaps last_maps;
  std::vector<int64_t> last_scored;
  ModelSet last_model;
  std::vector<int64_t> flagged;
  bool has_baseline = false;
  ModelSet baseline;
  ScoreStats baseline_stats;
  double baseline_threshold = 0;
};

// A checkpoint folder: checkpoint.<hash>.safetensors (parameters, optimizer states, maps) and
// checkpoint.json (everything else, the tensors file's name and sha256), each written
// atomically, the tensors first under a name of their own. The JSON's rename is the commit:
// before it the folder holds the previous complete pair, after it the new one; a kill in
// between loses no finished round. The older generation's tensors go after the commit.
void save_refine_checkpoint(const std::filesystem::path& dir, const RefineCheckpoint& c);
// nullopt when dir holds no checkpoint; InputError for a damaged or mismatched one, or for
// fields that contradict each other (refine() checks the rest against its run).
std::optional<RefineCheckpoint> load_refine_checkpoint(const std::filesystem::path& dir);
// Removes the checkpoint's files (and stale temporaries), then the folder when that empties it.
void remove_refine_checkpoint(const std::filesystem::path& dir);
// Takes the folder for one run (creating it): an exclusive lock on <dir>/checkpoint.lock, held
// until the returned object goes, and then removes the temporaries a killed writer left (only
// files of the checkpoint's own naming). InputError when another run holds the folder.
std::unique_ptr<FolderLock> lock_refine_checkpoint(const std::filesystem::path& dir);

struct RefineOptions {
  std::vector<int64_t> always_keep;  // a person's review: never rejected
  std::vector<int64_t> always_reject;  // ... excluded from the start (reported as round 0)
  bool baseline = false;
  // CPU: detectors/taps trained side by side, each with single-threaded BLAS; usually the
  // --threads budget. Any value above 1 gives the same results as any other.
  int workers = 1;
  // Resumable runs: continue from `resume` (its run_key must match), and hand the state to
  // `checkpoint` after every round.
  const RefineCheckpoint* resume = nullptr;
  std::function<void(const RefineCheckpoint&)> checkpoint;
  // phase ("round 2 fold 3/4 tap stride8"), step, total steps of the phase, loss.
  std::function<void(const std::string&, int64_t, int64_t, double)> progress;
};

// Runs refinement over the images of the banks (one bank per tap, same images in the same
// order). Deterministic for a given config seed, binary and thread count.
RefinementResult refine(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
                        const EpisodeSourceFactory& episodes, Device device,
                        const RefineOptions& options = {});

}  // namespace mirad
