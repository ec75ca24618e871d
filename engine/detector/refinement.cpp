// refine(): the driver of iterative refinement over its named steps (refine_steps.h), and the
// per-tap flow and scoring helpers the shipped detector shares with prediction.
#include "engine/detector/refinement.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/nvtx.h"
#include "kernels/quantiles.h"
#include "engine/detector/detector_jobs.h"
#include "engine/detector/refine_steps.h"
#include "engine/training/tap_trainer.h"

namespace mirad {

FlowConfig tap_flow_config(const DetectorConfig& cfg, int64_t channels, int64_t tap_index) {
  FlowConfig f;
  f.dim = channels;
  f.cond_dim = cfg.flow.cond_dim;
  f.n_blocks = cfg.flow.n_blocks;
  f.hidden = std::max<int64_t>(1, int64_t(std::llround(cfg.flow.hidden_factor * double(channels))));
  f.clamp = cfg.flow.clamp;
  f.seed = cfg.seed + 0x9e3779b97f4a7c15ULL * uint64_t(tap_index + 1);
  f.validate();
  return f;
}

double decision_threshold(const std::vector<double>& scores, const ThresholdSettings& t,
                          std::string* detail) {
  std::vector<double> f;
  for (double s : scores)
    if (std::isfinite(s)) f.push_back(s);
  CHECK_INPUT(!f.empty(), "threshold: every calibration score is NaN or Inf (the flow gives a "
              "non-finite NLL on every retained image)");
  if (t.rule == "fpr") {
    const double q = quantiles_cpu(f.data(), int64_t(f.size()), {1.0 - t.target_fpr})[0];
    if (detail) *detail = fmt::format("{:.4g} quantile of retained scores = {:.4g}", 1.0 - t.target_fpr, q);
    return q;
  }
  const QuartileStats q = quartiles_cpu(f.data(), int64_t(f.size()));
  if (detail)
    *detail = fmt::format("Q3 + {}*IQR of retained scores = {:.4g} + {}*{:.4g}", t.k, q.q3, t.k,
                          q.iqr);
  return q.threshold(t.k);
}

DeviceTapMaps score_maps_on_device(const ModelSet& model,
                                   const std::vector<const PatchBank*>& banks,
                                   const std::vector<int64_t>& images, const TrainSettings& train,
                                   Device device) {
  CHECK_INPUT(model.taps.size() == banks.size(), "scoring: model has {} taps, features have {}",
              model.taps.size(), banks.size());
  DeviceTapMaps maps;
  maps.n_images = int64_t(images.size());
  maps.device = device;
  for (size_t t = 0; t < banks.size(); ++t) {
    CHECK_INPUT(model.taps[t].flow.dim == banks[t]->channels(),
                "scoring: tap {} has {} channels, the model's flow {}", t, banks[t]->channels(),
                model.taps[t].flow.dim);
    // The trainer's own stream, so its forwards and the copies out of them stay ordered.
    TapTrainer tr(model.taps[t].flow, train, device);
    maps.grids.push_back({banks[t]->height(), banks[t]->width()});
    auto theta = Buffer<float>::from_host(model.taps[t].theta, device);
    maps.nll.emplace_back(size_t(maps.n_images * banks[t]->hw()), device);
    tr.score_into(theta, *banks[t], images, maps.nll.back().data());
    // The trainer (and its stream) ends here: its work must be done.
    if (device == Device::cuda) mem::synchronize(tr.stream());
  }
  return maps;
}

RefinementResult refine(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
                        const EpisodeSourceFactory& episodes, Device device,
                        const RefineOptions& opt) {
  NVTX_RANGE("refine");
  const RefineRun run = plan_run(banks, cfg, opt);
  DetectorJobs jobs(banks, cfg, episodes, device, opt);
  RefineCheckpoint st = start_state(run, jobs);
  for (int r = st.rounds_done + 1; !st.loop_done && r <= cfg.refine.max_rounds; ++r) {
    const auto start = std::chrono::steady_clock::now();
    RoundRecord rec;
    rec.round = r;
    rec.scored = st.retained;
    rec.train_loss = train_round(run, jobs, st, r);
    const std::vector<double> finite = score_round(run, st, rec);
    st.rounds_done = r;
    if (run.soft) {
      const std::vector<int64_t> down = down_weight(run, st, rec, finite);
      record_round(st, rec, start);
      stop_if_weights_settled(run, st, down);
    } else {
      const std::set<int64_t> out = decide_rejections(run, st, rec);
      record_round(st, rec, start);
      drop_rejected_or_stop(run, st, rec, out);
    }
    save_state(run, jobs, st);
  }
  st.loop_done = true;
  train_final_model(run, jobs, st);

  RefinementResult res;
  res.rounds = st.rounds;
  res.rejected = st.rejected;
  res.stop_reason = st.stop_reason;
  res.model = st.last_model;
  res.retained = st.retained;
  calibrate_detector(run, jobs, st, res);
  if (run.soft) report_down_weighted(res);
  res.flagged.assign(jobs.flagged().begin(), jobs.flagged().end());
  res.has_baseline = st.has_baseline;
  res.baseline = st.baseline;
  res.baseline_stats = st.baseline_stats;
  res.baseline_threshold = st.baseline_threshold;
  return res;
}

}  // namespace mirad
