// A training run: checks outputs up front, loads data and config, runs the job, summarises.
#include "tools/cli/training_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/detector/metrics.h"
#include "engine/io/json_io.h"
#include "host/thread_budget.h"

namespace mirad::cli {

namespace fs = std::filesystem;

namespace {

// A model whose training images all score (nearly) alike, e.g. copies of one image, divides by
// a spread of ~0 when it standardises: other images then score 1e19 and every decision is
// "anomalous". Said on stderr, since the run itself did nothing wrong.
void warn_on_flat_scores(const TrainResult& r) {
  const DetectorModel& m = r.model;
  auto flat = [](double iqr, double median) {
    return !(iqr > 1e-6 * std::max(1.0, std::abs(median)));
  };
  std::vector<std::string> which;
  for (size_t t = 0; t < m.taps.size() && t < m.stats.taps.size(); ++t)
    if (flat(m.stats.taps[t].iqr, m.stats.taps[t].median)) which.push_back("tap " + m.taps[t].name);
  if (flat(m.stats.top.iqr, m.stats.top.median)) which.push_back("top score");
  if (flat(m.stats.mean.iqr, m.stats.mean.median)) which.push_back("mean score");
  // A spread of exactly 0 is stored as 1 (robust_scale), so look at the images' scores too.
  std::vector<double> sc;
  for (double v : r.refinement.calibration_scores)
    if (std::isfinite(v)) sc.push_back(v);
  if (sc.size() >= 2) {
    std::sort(sc.begin(), sc.end());
    const double q1 = sc[sc.size() / 4], q3 = sc[(3 * sc.size()) / 4], med = sc[sc.size() / 2];
    if (flat(q3 - q1, med)) which.push_back("training images' scores");
  }
  if (which.empty()) return;
  std::fprintf(stderr, "mirad: warning: near-zero spread of the %s: the training images score "
               "(nearly) alike (copies of one image?). The model divides by that spread, so "
               "other images will get huge scores and the threshold means little; train on "
               "varied images\n", fmt::format("{}", fmt::join(which, ", ")).c_str());
}

}  // namespace

TrainingRun run_training(const TrainingRequest& req) {
  const auto t0 = std::chrono::steady_clock::now();
  TrainingRun run;
  run.config = load_config(req.run);
  run.data = load_data(req.data);
  std::vector<fs::path> inputs = run.data.inputs;
  if (!req.run.config.empty()) inputs.push_back(req.run.config);
  if (!req.run.features.empty()) inputs.push_back(req.run.features);
  if (!req.keep_list.empty()) inputs.push_back(req.keep_list);
  if (!req.reject_list.empty()) inputs.push_back(req.reject_list);
  for (const auto& out : req.outputs) refuse_overwriting_inputs(out, inputs);
  if (!req.run.checkpoint.empty()) {
    refuse_overwriting_inputs(req.run.checkpoint, inputs);
    check_writable_folder(req.run.checkpoint, "--checkpoint");  // else it fails after round 1
  }
  if (req.prepare_outputs) req.prepare_outputs();
  apply_thread_budget(req.run.threads);
  TrainJob job;
  for (const Item& it : run.data.dataset.train) job.images.push_back(it.path);
  if (!req.keep_list.empty()) job.keep = read_path_list(req.keep_list);
  if (!req.reject_list.empty()) job.reject = read_path_list(req.reject_list);
  job.config = run.config;
  job.threads = req.run.threads;
  job.strict = req.run.strict;
  job.features_file = req.run.features;
  job.normalize = req.run.normalize;
  job.baseline = req.baseline;
  job.checkpoint = req.run.checkpoint;
  JobBar bar(!req.run.json);
  run.result = run_train_job(job, bar.callback());
  run.contaminated = contaminated_paths(run.data);
  warn_on_flat_scores(run.result);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

std::optional<CleaningFigures> cleaning_figures(const TrainingRun& run) {
  const auto& d = run.data.dataset;
  // Labels exist for benchmark layouts (MVTec/KSDD2/folder with a manifest); a plain image
  // folder is nominally all good and carries no ground truth.
  if (d.layout == "images" || d.layout == "list") return std::nullopt;
  const std::set<std::string> bad(run.contaminated.begin(), run.contaminated.end());
  const auto& imgs = run.result.bank_images;
  std::vector<int64_t> rejected, contaminated;
  for (size_t i = 0; i < imgs.size(); ++i)
    if (bad.count(path_key(imgs[i]))) contaminated.push_back(int64_t(i));
  std::set<int64_t> seen;
  for (const auto& r : run.result.refinement.rejected)
    if (seen.insert(r.image).second) rejected.push_back(r.image);
  return CleaningFigures{int64_t(contaminated.size()), int64_t(rejected.size()),
                         metrics::cleaning(rejected, contaminated, int64_t(imgs.size()))};
}

void print_skipped(const TrainingRun& run) {
  for (const auto& s : run.result.skipped)
    std::printf("skipped (cannot decode): %s: %s\n",
                printable(run.data.dataset.train[s.index].path.string()).c_str(),
                printable(s.message).c_str());
}

void print_rounds(const TrainingRun& run) {
  const auto& rr = run.result.refinement;
  const std::set<std::string> bad(run.contaminated.begin(), run.contaminated.end());
  for (const auto& rec : rr.rounds) {
    int64_t truly = 0;
    for (int64_t img : rec.rejected)
      if (bad.count(path_key(run.result.bank_images[img]))) ++truly;
    std::printf("round %d: scored %zu, tau %.3f (%s), %s %zu%s%s, %.1f s\n", rec.round,
                rec.scored.size(), rec.tau, rec.rule_detail.c_str(),
                run.config.refine.soft ? "down-weighted" : "rejected", rec.rejected.size(),
                bad.empty() ? "" : fmt::format(" ({} truly defective)", truly).c_str(),
                rec.min_keep_reached ? ", min_keep reached" : "", rec.seconds);
  }
  std::printf("stopped: %s\n", rr.stop_reason.c_str());
}

}  // namespace mirad::cli
