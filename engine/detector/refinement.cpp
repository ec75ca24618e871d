// refine(): the driver of iterative refinement over its named steps (refine_steps.h), and the
// flow of each tap.
#include "engine/detector/refinement.h"

#include <chrono>
#include <cmath>

#include "core/error.h"
#include "core/nvtx.h"
#include "engine/detector/detector_jobs.h"
#include "engine/detector/refine_steps.h"

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
