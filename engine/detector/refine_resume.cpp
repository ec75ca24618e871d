// check_resume_state: a checkpoint's rounds replayed against the run's pool and review (which
// images each round scored, rejected and kept), the stop flags re-derived from the last round,
// and every stored model matched to the run's flows.
#include "engine/detector/refine_resume.h"

#include <set>
#include <string>

#include "core/error.h"

namespace mirad {

namespace {

[[noreturn]] void refuse(const std::string& what) {
  throw InputError(fmt::format("refinement: the checkpoint does not fit this run: {} (edited or "
                               "damaged?); remove the checkpoint folder to start over", what));
}
void require(bool ok, const std::string& what) {
  if (!ok) refuse(what);
}

std::vector<int64_t> minus(const std::vector<int64_t>& all, const std::vector<int64_t>& out) {
  const std::set<int64_t> drop(out.begin(), out.end());
  std::vector<int64_t> left;
  for (int64_t i : all)
    if (!drop.count(i)) left.push_back(i);
  return left;
}

// A model set the run could have trained: one flow per tap, the run's own (the tensors were
// checked against the stored flows on load, so this pins their sizes to the banks).
void require_models(const ModelSet& m, const ResumeFrame& f, const std::string& what) {
  require(m.taps.size() == f.flows.size(),
          fmt::format("{} has {} taps, the run {}", what, m.taps.size(), f.flows.size()));
  for (size_t t = 0; t < m.taps.size(); ++t)
    require(m.taps[t].flow.to_json() == f.flows[t].to_json(),
            fmt::format("{} tap {} is another flow than this run's", what, t));
}

}  // namespace

void check_resume_state(const RefineCheckpoint& c, const ResumeFrame& f) {
  const int R = c.rounds_done;
  // load_refine_checkpoint made sure rounds_done == rounds.size() and the rounds' own shapes.
  require(R >= 1 && R <= f.max_rounds && size_t(R) == c.rounds.size(),
          fmt::format("{} rounds done of at most {}", R, f.max_rounds));
  const RoundRecord& last = c.rounds.back();

  // The review's rejections come first, as round 0.
  require(c.rejected.size() >= f.reviewed.size(), "the review's rejections are missing");
  for (size_t i = 0; i < f.reviewed.size(); ++i)
    require(c.rejected[i].image == f.reviewed[i].image && c.rejected[i].round == 0,
            "the review's rejections differ");
  size_t next = f.reviewed.size();
  if (f.soft) {
    // Soft: every round scores the whole pool and only down-weights.
    require(c.rejected.size() == f.reviewed.size(), "soft mode has rejections beyond the review");
    for (const RoundRecord& rec : c.rounds) {
      require(rec.scored == f.pool && rec.weights.size() == rec.scored.size(),
              fmt::format("round {} did not weigh the whole pool", rec.round));
      std::vector<int64_t> down;
      for (size_t j = 0; j < rec.scored.size(); ++j)
        if (rec.weights[j] < 1.0) down.push_back(rec.scored[j]);
      require(down == rec.rejected,
              fmt::format("round {} lists other down-weighted images than its weights", rec.round));
    }
    require(c.retained == f.pool, "soft mode retained other images than the pool");
    require(c.weights == last.weights, "the weights are not the last round's");
    require(c.last_down == last.rejected, "the down-weighted images are not the last round's");
  } else {
    // Hard: round r scores what round r-1 kept, and every rejection is recorded once, in order.
    std::vector<int64_t> scored = f.pool;
    for (const RoundRecord& rec : c.rounds) {
      require(rec.scored == scored,
              fmt::format("round {} scored other images than the previous round kept", rec.round));
      require(rec.weights.empty(), fmt::format("round {} has weights in hard mode", rec.round));
      for (int64_t img : rec.rejected) {
        require(next < c.rejected.size() && c.rejected[next].image == img &&
                    c.rejected[next].round == rec.round,
                fmt::format("the rejections differ from round {}'s", rec.round));
        ++next;
      }
      scored = minus(scored, rec.rejected);
    }
    require(next == c.rejected.size(), "more rejections than the rounds made");
    require(c.retained == scored, "the retained images are not those the rounds kept");
    require(c.weights.empty() && c.last_down.empty(), "hard mode has weights");
  }

  // The flags follow from the last round (and, soft, the one before): they are not free state.
  bool stop = false, final_ready = false;
  std::string reason = "max_rounds";
  if (f.soft) {
    const std::vector<int64_t> before = R >= 2 ? c.rounds[R - 2].rejected : std::vector<int64_t>{};
    stop = last.rejected == before;
    if (stop) reason = "converged", final_ready = !f.cross;
  } else {
    stop = last.rejected.empty() || last.min_keep_reached;
    if (stop) reason = last.min_keep_reached ? "min_keep" : "converged";
    final_ready = stop && last.rejected.empty() && !f.cross;
  }
  require(c.loop_done == stop && c.final_ready == final_ready && c.stop_reason == reason,
          fmt::format("loop_done {}, final_ready {}, stop_reason '{}' do not follow from round {} "
                      "(expected {}, {}, '{}')", c.loop_done, c.final_ready, c.stop_reason, R,
                      stop, final_ready, reason));

  // The models: one per fold that had images, the in-sample model, the baseline.
  require(int(c.prev.size()) == f.folds && int(c.has_prev.size()) == f.folds,
          fmt::format("{} fold models for {} folds", c.prev.size(), f.folds));
  bool any = false;
  for (int k = 0; k < f.folds; ++k) {
    if (c.has_prev[k]) require_models(c.prev[k], f, fmt::format("fold model {}", k));
    else require(c.prev[k].taps.empty(), fmt::format("fold model {} is stored but unset", k));
    any = any || c.has_prev[k];
  }
  require(any, "no fold model is stored after a round");
  if (f.cross) require(c.last_model.taps.empty(), "cross-fit stores an in-sample model");
  else require_models(c.last_model, f, "the last model");
  const bool baseline = f.baseline && !f.cross;  // cross-fit trains it only at the end
  require(c.has_baseline == baseline, fmt::format("has_baseline is {}", c.has_baseline));
  if (baseline) {
    require_models(c.baseline, f, "the baseline");
    require(c.baseline_stats.taps.size() == f.flows.size(), "the baseline's statistics");
  }

  // The last round's maps: one per image it scored, on the banks' grids.
  require(c.last_scored == last.scored, "the last scored images are not the last round's");
  require(c.last_maps.grids.size() == f.grids.size() &&
              c.last_maps.n_images == int64_t(last.scored.size()),
          "the last maps do not fit the last round");
  for (size_t t = 0; t < f.grids.size(); ++t)
    require(c.last_maps.grids[t].height == f.grids[t].height &&
                c.last_maps.grids[t].width == f.grids[t].width,
            fmt::format("tap {} maps are on another grid", t));
  for (int64_t i : c.flagged)
    require(i >= 0 && i < f.n_images, fmt::format("flagged image {} does not exist", i));
}

}  // namespace mirad
