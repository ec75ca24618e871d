// The train job: features (once per image) -> iterative refinement -> the detector model (and
// the no-rejection baseline on request), with a person's review lists applied.
#include "host/train_job.h"

#include <chrono>
#include <cmath>
#include <map>
#include <set>

#include "core/error.h"
#include "host/features.h"
#include "core/threads.h"
#include "engine/detector/round_summary.h"
#include "engine/io/json_io.h"
#include "host/episode_scheduler.h"
#include "host/input_size.h"
#include "engine/io/path_key.h"

namespace mirad {

namespace fs = std::filesystem;

TrainResult run_train_job(const TrainJob& job, const JobProgress& progress) {
  CHECK_INPUT(!job.images.empty(), "the training set is empty");
  // Said before the features: "only 1 of 1 could be decoded" would blame an image that is fine.
  CHECK_INPUT(job.images.size() >= 2, "the training set has {} image; at least 2 are needed",
              job.images.size());
  for (const auto& p : job.images) require_utf8_path(p, "training image");
  const Device device = parse_device(job.config.device);
  // A person's review, matched by path.
  std::map<std::string, int64_t> index;
  for (size_t i = 0; i < job.images.size(); ++i) index[path_key(job.images[i])] = int64_t(i);
  auto lookup = [&](const fs::path& p, const char* list) {
    auto it = index.find(path_key(p));
    CHECK_INPUT(it != index.end(), "--{} lists {}, which is not in the training set", list,
                printable(p.string()));
    return it->second;
  };
  std::set<int64_t> keep, reject;
  for (const auto& p : job.keep) keep.insert(lookup(p, "keep"));
  for (const auto& p : job.reject) reject.insert(lookup(p, "reject"));
  for (int64_t i : keep)
    CHECK_INPUT(!reject.count(i), "{} is listed in both --keep and --reject",
                printable(job.images[i].string()));
  job.config.check_training_budget();

  TrainResult res;
  // The checkpoint folder is taken, and its checkpoint read, before any feature work: a second
  // run on the folder or a damaged checkpoint is refused at once, not after the backbone pass.
  std::optional<RefineCheckpoint> resume;
  if (!job.checkpoint.empty()) {
    res.checkpoint_lock = lock_refine_checkpoint(job.checkpoint);
    resume = load_refine_checkpoint(job.checkpoint);
  }
  FeatureRequest req;
  req.settings = job.config.features;
  req.size = choose_input_size(job.images, job.config.features.short_side);
  req.device = device;
  req.threads = job.threads;
  req.strict = job.strict;
  req.features_file = job.features_file;
  req.normalize = job.normalize;
  auto features = std::make_shared<Features>(compute_features(job.images, req, progress));
  const Features& f = *features;
  res.features = features;
  res.backbone_passes = f.backbone_passes;
  res.feature_seconds = f.seconds;
  res.features_from_file = f.from_file;
  res.skipped = f.failures;
  CHECK_INPUT(f.usable.size() >= 2, "only {} of {} training images could be decoded; at least "
              "2 are needed", f.usable.size(), job.images.size());
  std::map<int64_t, int64_t> bank_of;
  for (size_t b = 0; b < f.usable.size(); ++b) {
    bank_of[f.usable[b]] = int64_t(b);
    res.bank_images.push_back(job.images[f.usable[b]]);
  }
  const auto t0 = std::chrono::steady_clock::now();
  Banks banks = make_banks(f, job.config.flow.cond_dim, device);
  RefineOptions ro;
  for (int64_t i : keep)
    if (bank_of.count(i)) ro.always_keep.push_back(bank_of[i]);
  for (int64_t i : reject)
    if (bank_of.count(i)) ro.always_reject.push_back(bank_of[i]);
  ro.baseline = job.baseline;
  ro.workers = job.threads > 0 ? job.threads : available_cores();
  ro.progress = [&](const std::string& phase, int64_t done, int64_t total, double loss) {
    if (progress) progress(phase, done, total, loss);
  };
  if (!job.checkpoint.empty()) {
    if (resume) {
      ro.resume = &*resume;
      res.resumed_from_round = resume->rounds_done;
    }
    ro.checkpoint = [&](const RefineCheckpoint& c) { save_refine_checkpoint(job.checkpoint, c); };
  }
  res.refinement = refine(banks.ptrs, job.config, EpisodeScheduler::factory(), device, ro);
  res.refine_seconds = seconds_since(t0);

  const RefinementResult& rr = res.refinement;
  auto assemble = [&](const ModelSet& ms, const ScoreStats& stats, double threshold,
                      const std::string& detail) {
    DetectorModel m;
    m.config = job.config;
    // The arithmetic the features really had (the CPU backend is always FP32), so that predict
    // on any device computes its features the way the model's were computed where it can.
    m.config.features.precision = f.precision;
    m.backbone = f.backbone;
    for (size_t t = 0; t < f.shapes.size(); ++t) {
      TapModel tm;
      tm.name = f.tap_names[t];
      tm.op = f.tap_ops[t];
      tm.channels = f.shapes[t].channels;
      tm.height = f.shapes[t].height;
      tm.width = f.shapes[t].width;
      tm.norm = banks.owned[t]->norm();
      tm.params = ms.taps[t];
      m.taps.push_back(std::move(tm));
    }
    m.stats = stats;
    m.threshold = threshold;
    m.threshold_detail = detail;
    return m;
  };
  res.model = assemble(rr.model, rr.stats, rr.threshold, rr.threshold_detail);
  for (int64_t b : rr.retained) res.model.retained.push_back(res.bank_images[b].string());
  for (const auto& r : rr.rejected)
    res.model.rejected.push_back({res.bank_images[r.image].string(), r.round, r.score, r.tau, r.weight});
  nlohmann::json skipped = nlohmann::json::array();
  for (const auto& s : res.skipped)
    skipped.push_back({{"path", job.images[s.index].string()}, {"error", s.message}});
  nlohmann::json flagged = nlohmann::json::array();
  for (int64_t b : rr.flagged) flagged.push_back(res.bank_images[b].string());
  res.model.training = {{"images", job.images.size()},
                        {"stop_reason", rr.stop_reason},
                        {"rounds", to_json(summarize_rounds(rr.rounds))},
                        {"skipped", skipped},
                        {"nonfinite_loss_images", flagged},
                        {"feature_seconds", res.feature_seconds},
                        {"refine_seconds", res.refine_seconds}};
  if (rr.has_baseline) {
    res.baseline = assemble(rr.baseline, rr.baseline_stats, rr.baseline_threshold,
                            "baseline: every training image, no rejection");
    for (const auto& p : res.bank_images) res.baseline->retained.push_back(p.string());
  }
  return res;
}

}  // namespace mirad
