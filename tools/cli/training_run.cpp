// A training run: checks outputs up front, loads data and config, runs the job, summarises.
#include "tools/cli/training_run.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <set>

#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/json_io.h"
#include "engine/metrics.h"

namespace mirad::cli {

namespace fs = std::filesystem;

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
  if (!req.run.checkpoint.empty()) refuse_overwriting_inputs(req.run.checkpoint, inputs);
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
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return run;
}

nlohmann::json cleaning_json(const TrainingRun& run) {
  const auto& d = run.data.dataset;
  // Labels exist for benchmark layouts (MVTec/KSDD2/folder with a manifest); a plain image
  // folder is nominally all good and carries no ground truth.
  if (d.layout == "images" || d.layout == "list") return nullptr;
  const std::set<std::string> bad(run.contaminated.begin(), run.contaminated.end());
  const auto& imgs = run.result.bank_images;
  std::vector<int64_t> rejected, contaminated;
  for (size_t i = 0; i < imgs.size(); ++i)
    if (bad.count(path_key(imgs[i]))) contaminated.push_back(int64_t(i));
  std::set<int64_t> seen;
  for (const auto& r : run.result.refinement.rejected)
    if (seen.insert(r.image).second) rejected.push_back(r.image);
  const auto c = metrics::cleaning(rejected, contaminated, int64_t(imgs.size()));
  return {{"contaminated", contaminated.size()},
          {"rejected", rejected.size()},
          {"true_rejections", c.tp},
          {"false_rejections", c.fp},
          {"missed", c.fn},
          {"precision", c.precision},
          {"recall", c.recall},
          {"f1", c.f1},
          {"false_rejection_rate", c.false_rejection_rate}};
}

nlohmann::json rounds_json(const TrainingRun& run) {
  return run.result.model.training.value("rounds", nlohmann::json::array());
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
