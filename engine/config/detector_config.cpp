// DetectorConfig: JSON round trip and validation.
#include "engine/config/detector_config.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <utility>

#include "core/error.h"
#include "engine/io/json_fields.h"

namespace mirad {

namespace {

// Each choice's names, in the order the errors list them.
template <typename E, size_t N>
using Names = std::array<std::pair<E, const char*>, N>;
constexpr Names<TrainMode, 2> kTrainModes{{{TrainMode::plain, "plain"}, {TrainMode::maml, "maml"}}};
constexpr Names<TaskBatching, 3> kTaskBatchings{{{TaskBatching::automatic, "auto"},
                                                 {TaskBatching::on, "on"},
                                                 {TaskBatching::off, "off"}}};
constexpr Names<FlowPrecision, 3> kFlowPrecisions{{{FlowPrecision::fp32, "fp32"},
                                                   {FlowPrecision::tf32, "tf32"},
                                                   {FlowPrecision::bf16, "bf16"}}};
constexpr Names<ScoringMethod, 2> kScoringMethods{{{ScoringMethod::in_sample, "in_sample"},
                                                   {ScoringMethod::cross_fit, "cross_fit"}}};
constexpr Names<RejectionRule, 4> kRejectionRules{{{RejectionRule::iqr, "iqr"},
                                                   {RejectionRule::adjusted, "adjusted"},
                                                   {RejectionRule::mad, "mad"},
                                                   {RejectionRule::gmm, "gmm"}}};
constexpr Names<ThresholdRule, 2> kThresholdRules{{{ThresholdRule::iqr, "iqr"},
                                                   {ThresholdRule::fpr, "fpr"}}};

template <typename E, size_t N>
const char* name_in(const Names<E, N>& names, E v) {
  for (const auto& [e, name] : names)
    if (e == v) return name;
  throw InputError(fmt::format("config: no name for choice {}", int(v)));
}

// Reads a choice by its name, with the errors of a string key and its allowed values.
template <typename E, size_t N>
void read_choice(const JsonFields& f, const char* key, E& field, const Names<E, N>& names) {
  std::string s = name_in(names, field);
  std::vector<std::string> allowed;
  for (const auto& entry : names) allowed.push_back(entry.second);
  f.string(key, s, allowed);
  for (const auto& [e, name] : names)
    if (s == name) field = e;
}

}  // namespace

const char* name_of(TrainMode v) { return name_in(kTrainModes, v); }
const char* name_of(TaskBatching v) { return name_in(kTaskBatchings, v); }
const char* name_of(FlowPrecision v) { return name_in(kFlowPrecisions, v); }
const char* name_of(ScoringMethod v) { return name_in(kScoringMethods, v); }
const char* name_of(RejectionRule v) { return name_in(kRejectionRules, v); }
const char* name_of(ThresholdRule v) { return name_in(kThresholdRules, v); }

nlohmann::json DetectorConfig::to_json() const {
  return {
      {"device", device},
      {"seed", seed},
      {"features",
       {{"backbone", features.backbone},
        {"taps", features.taps},
        {"short_side", features.short_side},
        {"smooth", features.smooth},
        {"batch", features.batch},
        {"precision", features.precision}}},
      {"flow",
       {{"n_blocks", flow.n_blocks},
        {"cond_dim", flow.cond_dim},
        {"hidden_factor", flow.hidden_factor},
        {"clamp", flow.clamp}}},
      {"train",
       {{"mode", name_of(train.mode)},
        {"second_order", train.second_order},
        {"budget", train.budget},
        {"support", train.support},
        {"query", train.query},
        {"meta_batch", train.meta_batch},
        {"n_inner", train.n_inner},
        {"inner_lr", train.inner_lr},
        {"meta_lr", train.meta_lr},
        {"n_final", train.n_final},
        {"positions", train.positions},
        {"warm_start", train.warm_start},
        {"cuda_graphs", train.cuda_graphs},
        {"batched_tasks", name_of(train.batched_tasks)},
        {"precision", name_of(train.precision)},
        {"round_budget", train.round_budget}}},
      {"refine",
       {{"max_rounds", refine.max_rounds},
        {"rule", name_of(refine.rule)},
        {"k", rule_k()},
        {"min_keep", refine.min_keep},
        {"scoring", name_of(refine.scoring)},
        {"folds", refine.folds},
        {"soft", refine.soft}}},
      {"score",
       {{"top_fraction", score.top_fraction},
        {"weight", score.weight},
        {"map_sigma", score.map_sigma}}},
      {"threshold",
       {{"rule", name_of(threshold.rule)}, {"k", threshold.k}, {"target_fpr", threshold.target_fpr}}},
  };
}

DetectorConfig DetectorConfig::from_json(const nlohmann::json& j) {
  DetectorConfig c;
  JsonFields top(j, "config",
                 {"device", "seed", "features", "flow", "train", "refine", "score", "threshold"});
  top.string("device", c.device, {"cpu", "cuda"});
  top.integer("seed", c.seed, uint64_t(0), UINT64_MAX);
  if (top.has("features")) {
    JsonFields f(top.object("features"), "config.features",
                 {"backbone", "taps", "short_side", "smooth", "batch", "precision"});
    f.string("backbone", c.features.backbone);
    f.strings("taps", c.features.taps);
    f.integer("short_side", c.features.short_side, int64_t(32), int64_t(4096));
    f.boolean("smooth", c.features.smooth);
    f.integer("batch", c.features.batch, int64_t(1), int64_t(4096));
    f.string("precision", c.features.precision, {"fp32", "tf32", "fp16", "bf16"});
    CHECK_INPUT(!c.features.taps.empty(), "config.features.taps must name at least one tap");
    // Two flows of one tap cost twice and add nothing; embed refuses them too. (Two spellings
    // of one op, a name and its index, are caught once the graph resolves them.)
    for (size_t a = 0; a < c.features.taps.size(); ++a)
      for (size_t b = a + 1; b < c.features.taps.size(); ++b)
        CHECK_INPUT(c.features.taps[a] != c.features.taps[b],
                    "config.features.taps lists '{}' twice", c.features.taps[a]);
  }
  if (top.has("flow")) {
    JsonFields f(top.object("flow"), "config.flow",
                 {"n_blocks", "cond_dim", "hidden_factor", "clamp"});
    f.integer("n_blocks", c.flow.n_blocks, int64_t(1), int64_t(64));
    f.integer("cond_dim", c.flow.cond_dim, int64_t(0), int64_t(1024));
    f.number("hidden_factor", c.flow.hidden_factor, 0.125, 16.0);
    f.number("clamp", c.flow.clamp, 0.01, 19.99);
    CHECK_INPUT(c.flow.cond_dim % 4 == 0,
                "config.flow.cond_dim must be a multiple of 4 (2-D sin/cos pairs; got {})",
                c.flow.cond_dim);
  }
  if (top.has("train")) {
    JsonFields f(top.object("train"), "config.train",
                 {"mode", "second_order", "budget", "support", "query", "meta_batch", "n_inner",
                  "inner_lr", "meta_lr", "n_final", "positions", "warm_start", "round_budget",
                  "cuda_graphs", "batched_tasks", "precision"});
    read_choice(f, "mode", c.train.mode, kTrainModes);
    f.boolean("second_order", c.train.second_order);
    f.integer("budget", c.train.budget, int64_t(1), int64_t(100000000));
    f.integer("support", c.train.support, int64_t(1), int64_t(100000));
    f.integer("query", c.train.query, int64_t(1), int64_t(100000));
    f.integer("meta_batch", c.train.meta_batch, int64_t(1), int64_t(1024));
    f.integer("n_inner", c.train.n_inner, int64_t(1), int64_t(100));
    f.number("inner_lr", c.train.inner_lr, 1e-12, 10.0);
    f.number("meta_lr", c.train.meta_lr, 1e-12, 10.0);
    f.integer("n_final", c.train.n_final, int64_t(0), int64_t(1000000));
    f.integer("positions", c.train.positions, int64_t(0), int64_t(1) << 30);
    f.boolean("warm_start", c.train.warm_start);
    f.number("round_budget", c.train.round_budget, 0.0, 1.0);
    f.boolean("cuda_graphs", c.train.cuda_graphs);
    read_choice(f, "batched_tasks", c.train.batched_tasks, kTaskBatchings);
    read_choice(f, "precision", c.train.precision, kFlowPrecisions);
  }
  if (top.has("refine")) {
    JsonFields f(top.object("refine"), "config.refine",
                 {"max_rounds", "rule", "k", "min_keep", "scoring", "folds", "soft"});
    f.integer("max_rounds", c.refine.max_rounds, int64_t(0), int64_t(100));
    read_choice(f, "rule", c.refine.rule, kRejectionRules);
    f.number("k", c.refine.k, 0.0, 100.0);
    f.number("min_keep", c.refine.min_keep, 0.0, 1.0);
    read_choice(f, "scoring", c.refine.scoring, kScoringMethods);
    f.integer("folds", c.refine.folds, int64_t(2), int64_t(64));
    f.boolean("soft", c.refine.soft);
  }
  if (top.has("score")) {
    JsonFields f(top.object("score"), "config.score", {"top_fraction", "weight", "map_sigma"});
    f.number("top_fraction", c.score.top_fraction, 1e-6, 1.0);
    f.number("weight", c.score.weight, 0.0, 1.0);
    f.number("map_sigma", c.score.map_sigma, 0.0, 256.0);
  }
  if (top.has("threshold")) {
    JsonFields f(top.object("threshold"), "config.threshold", {"rule", "k", "target_fpr"});
    read_choice(f, "rule", c.threshold.rule, kThresholdRules);
    f.number("k", c.threshold.k, 0.0, 100.0);
    f.number("target_fpr", c.threshold.target_fpr, 1e-6, 0.5);
  }
  return c;
}

// Refused rather than fitted: shrinking the meta-batch to the budget behind the user's back
// would run another method than the one asked for, and with meta_batch 1024 and budget 20 the
// one step taken anyway cost about 100x the budget (issue 13, finding 12). Plain training
// takes one evaluation per step, which any budget (>= 1) pays for.
void DetectorConfig::check_training_budget() const {
  if (train.mode != TrainMode::maml) return;
  const int64_t step = evals_per_step(), need = step + train.n_final;
  CHECK_INPUT(need <= train.budget,
              "config.train: one MAML step of {} tasks costs {} gradient evaluations, which with "
              "n_final = {} is over the budget of {}: lower train.meta_batch (or n_inner, "
              "n_final), or raise train.budget to at least {}",
              train.meta_batch, step, train.n_final, train.budget, need);
  if (!train.warm_start || refine.max_rounds < 1) return;
  // The warm-started models (rounds after the first, and the final one) get this much; the
  // same rounding as the trainer's.
  const int64_t warm =
      std::max<int64_t>(1, std::llround(double(train.budget) * train.round_budget));
  CHECK_INPUT(need <= warm,
              "config.train: warm-started rounds get train.budget * train.round_budget = {} "
              "gradient evaluations, less than one MAML step of {} plus n_final = {}: raise "
              "train.round_budget to at least {:.3g} (or train.budget), or lower "
              "train.meta_batch",
              warm, step, train.n_final, double(need) / double(train.budget));
}

double DetectorConfig::rule_k() const {
  if (refine.k >= 0) return refine.k;
  return refine.rule == RejectionRule::mad ? 3.0 : 1.5;
}

int64_t DetectorConfig::evals_per_step() const {
  if (train.mode == TrainMode::plain) return 1;
  // Per task: n_inner support gradients, one query gradient, and (second order) n_inner HVPs
  // at two evaluations each (forward-over-reverse costs about two gradients).
  const int64_t per_task = train.n_inner + 1 + (train.second_order ? 2 * train.n_inner : 0);
  return train.meta_batch * per_task;
}

}  // namespace mirad
