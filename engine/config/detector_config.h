// Every hyperparameter of a detector job (features, flow, training, refinement, scoring,
// threshold) with the design's defaults, read from JSON with unknown keys refused.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace mirad {

// The config's named choices, parsed once where a config is read (from_json) so that the code
// below compares enums, never strings; config.json holds the names (name_of()), unchanged.
enum class TrainMode { plain, maml };
enum class TaskBatching { automatic, on, off };  // "auto", "on", "off"
enum class FlowPrecision { fp32, tf32, bf16 };
enum class ScoringMethod { in_sample, cross_fit };
enum class RejectionRule { iqr, adjusted, mad, gmm };
enum class ThresholdRule { iqr, fpr };

const char* name_of(TrainMode v);
const char* name_of(TaskBatching v);
const char* name_of(FlowPrecision v);
const char* name_of(ScoringMethod v);
const char* name_of(RejectionRule v);
const char* name_of(ThresholdRule v);

struct FeatureSettings {
  std::string backbone = "efficientnet_lite0";  // a model folder or a name in the model cache
  std::vector<std::string> taps = {"stride8", "stride16"};
  int64_t short_side = 256;  // input short side; the long side keeps the aspect ratio
  bool smooth = true;        // 3x3 average pool of each tap
  int64_t batch = 16;        // images per backbone batch
  // CUDA: the backbone's convolution arithmetic (BackbonePrecision in engine/backbone/backbone.h):
  // "fp32" (the default, matches the CPU), "tf32", "fp16" or "bf16" (16-bit NHWC activations on
  // tensor cores). The CPU backend is always FP32.
  std::string precision = "fp32";
};

struct FlowSettings {
  int64_t n_blocks = 8;
  int64_t cond_dim = 64;      // positional encoding channels
  double hidden_factor = 2;   // subnet width = hidden_factor * D
  double clamp = 1.9;
};

struct TrainSettings {
  // "plain" (Adam on the NLL) or "maml". Plain is the default: at equal gradient evaluations
  // it beat MAML (first and second order) on the generated benchmark (docs/RESULTS.md).
  TrainMode mode = TrainMode::plain;
  bool second_order = true;    // MAML: exact meta-gradient through the inner steps (HVPs)
  // Gradient evaluations per model: one is forward+backward over one batch of `support`
  // images; an HVP counts as two, and the final adaptation's steps count too. Plain and MAML
  // get the same budget, so comparing them compares methods, not step counts.
  int64_t budget = 320;
  int64_t support = 8;         // |S| images per task (and per plain / adaptation batch)
  int64_t query = 8;           // |Q| images per task
  int64_t meta_batch = 4;      // B tasks per outer step
  int64_t n_inner = 1;         // inner SGD steps
  double inner_lr = 1e-3;      // alpha, on the per-dimension NLL (the NLL sum / D)
  double meta_lr = 3e-3;       // Adam on theta_0 (plain: Adam on theta)
  int64_t n_final = 20;        // SGD steps adapting theta_0 on the retained set (MAML only)
  int64_t positions = 64;      // positions drawn per image per batch; 0 = all
  bool warm_start = true;      // rounds after the first start from the previous round's model
  // CUDA: capture each training step as a CUDA graph and replay it, reading losses back every
  // 10 steps instead of every step (same results as without; off = the eager loop).
  bool cuda_graphs = true;
  // MAML: the meta-batch's B tasks run together (strided-batched GEMMs on CUDA, one launch per
  // op for all tasks) instead of one after another, in the graph-captured and the eager loop.
  // "auto" (the default): on CUDA only; "on": on any device; "off": never. Same meta-gradient
  // up to float rounding on CUDA; bit-identical on the CPU, where it saves nothing and costs
  // memory (two more flows' activations for B tasks: +32% peak RSS on a small MAML job).
  TaskBatching batched_tasks = TaskBatching::automatic;
  // CUDA: "fp32" (the default, matches the CPU to float rounding), "tf32" (tensor cores for
  // the flow's GEMMs; products rounded to 10 mantissa bits) or "bf16" (tensor cores, operands
  // rounded to 8 mantissa bits, FP32 accumulation).
  FlowPrecision precision = FlowPrecision::fp32;
  double round_budget = 0.5;   // ... with this fraction of the budget
};

struct RefineSettings {
  int64_t max_rounds = 5;
  RejectionRule rule = RejectionRule::iqr;  // "iqr" (Q3 + k*IQR, the paper), "adjusted",
                                            // "mad", "gmm"
  double k = -1;                 // the rule's multiplier; -1: the rule's default
                                 // (iqr 1.5, mad 3.0, gmm 1.5 for its one-cluster fallback)
  double min_keep = 0.5;         // never keep fewer than this fraction of the images
  // "in_sample" (the paper) or "cross_fit" (ours: K fold models per round, 2-3x the training
  // time). Cross-fit is the default: on the benchmark's heavily contaminated sets (r = 0.4) it
  // raised cleaning F1 by 0.09-0.19 and image AUROC by up to 0.05 (docs/RESULTS.md).
  ScoringMethod scoring = ScoringMethod::cross_fit;
  int64_t folds = 4;
  bool soft = false;             // down-weight instead of dropping
};

struct ScoreSettings {
  double top_fraction = 0.01;  // image score: mean of the top 1% of the fused map ...
  double weight = 0.5;         // ... mixed with the map's mean: w*top + (1-w)*mean
  double map_sigma = 4.0;      // Gaussian smoothing of output maps, px at a 256-px short side
};

struct ThresholdSettings {
  ThresholdRule rule = ThresholdRule::iqr;  // "iqr": Q3 + k*IQR of the retained scores;
                                            // "fpr": a quantile
  double k = 1.5;
  double target_fpr = 0.05;  // rule "fpr": the fraction of retained training images above it
};

struct DetectorConfig {
  std::string device = "cpu";
  uint64_t seed = 0;
  FeatureSettings features;
  FlowSettings flow;
  TrainSettings train;
  RefineSettings refine;
  ScoreSettings score;
  ThresholdSettings threshold;

  nlohmann::json to_json() const;
  // Missing keys keep their defaults; unknown keys, wrong types and out-of-range values are
  // InputErrors naming the key.
  static DetectorConfig from_json(const nlohmann::json& j);
  // Gradient evaluations of one outer step (MAML) or one step (plain).
  int64_t evals_per_step() const;
  // InputError when a model's budget cannot pay for one MAML step and the final adaptation:
  // training always takes that step, so the budget would be overrun (cold, or in the warm
  // rounds at train.round_budget of it).
  void check_training_budget() const;
  // refine.k, or the rule's default when unset.
  double rule_k() const;
};

}  // namespace mirad
