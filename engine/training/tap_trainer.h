// TapTrainer: trains and adapts the flow of one feature tap. Plain training is Adam on the NLL of
// image batches; MAML is Adam on theta_0 with meta-gradients averaged over a meta-batch of
// tasks, and the shipped parameters are theta_0 adapted by n_final SGD steps. Scoring is not
// the trainer's: train and predict time share the detector layer's scorer.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "core/buffer.h"
#include "engine/training/cuda_graph.h"
#include "engine/config/detector_config.h"
#include "engine/training/episodes.h"
#include "engine/flow/flow.h"
#include "engine/training/maml.h"
#include "engine/flow/optimizer.h"
#include "engine/training/patch_bank.h"

namespace mirad {

struct TapTrainStats {
  int64_t steps = 0;         // optimizer steps taken (outer steps for MAML)
  int64_t evals = 0;         // gradient evaluations spent (HVP = 2)
  int64_t masked_rows = 0;   // batch rows left out for a non-finite NLL
  int64_t divergences = 0;   // times the parameters were restored and the learning rate halved
  double final_lr = 0;       // the outer learning rate at the end
  double final_inner_lr = 0; // MAML's inner step at the end (halved with each divergence)
  std::vector<int64_t> flagged_images;  // bank images those rows came from (suspects)
  double first_loss = 0, last_loss = 0;  // mean NLL of the first and last steps' batches
};

using TrainProgress = std::function<void(int64_t step, int64_t total, double loss)>;
// Sees the gradient each optimizer step applies (the averaged meta-gradient for MAML), copied
// to the host: for tests and inspection, off the hot path when unset.
using GradientObserver = std::function<void(int64_t step, const std::vector<float>& grad)>;

class TapTrainer {
 public:
  TapTrainer(const FlowConfig& flow, const TrainSettings& train, Device device,
             Stream stream = {});
  ~TapTrainer();

  const FlowConfig& flow_config() const { return m_flow_s.config(); }
  int64_t n_params() const { return m_flow_s.n_params(); }
  Device device() const { return m_device; }
  Stream stream() const { return m_stream; }
  const TrainSettings& settings() const { return m_train; }
  void set_gradient_observer(GradientObserver observer) { m_observer = std::move(observer); }
  // CUDA graphs: what the last captured training step launches (zeros before any capture).
  const GraphCensus& last_graph_census() const { return m_census; }
  // Steps one train() call takes for a budget (at least one).
  int64_t steps_for_budget(int64_t budget) const;

  // The seeded initial parameters with a data-dependent ActNorm from one batch of the source.
  Buffer<float> init_params(const PatchBank& bank, EpisodeSource& source);
  // Trains theta in place (theta_0 for MAML) with `budget` gradient evaluations. `state`, when
  // given, carries Adam's moments across calls (a warm start continues the optimisation instead
  // of restarting Adam, whose first steps move every parameter by a full learning rate): it is
  // imported when not empty and holds the state at the end.
  //
  // Divergence guard: when a whole batch's NLL, or a parameter, turns non-finite, the last good
  // parameters (kept every few steps) are restored, the learning rate is halved and the event is
  // counted; the third time is an InputError saying so.
  TapTrainStats train(VecView<float> theta, const PatchBank& bank, EpisodeSource& source,
                      int64_t budget, const TrainProgress& progress = {},
                      OptimizerState<float>* state = nullptr);
  // The shipped parameters: MAML adapts theta_0 with n_final SGD steps on batches of the
  // source, at the inner step the last train() ended with (inner_lr unless it diverged);
  // plain copies theta_0.
  void adapt(VecView<const float> theta0, VecView<float> theta, const PatchBank& bank,
             EpisodeSource& source, TapTrainStats* stats = nullptr);

 private:
  // A batch of the given images' rows, with rows whose NLL at theta is not finite left out
  // (recorded in stats). False when nothing finite is left.
  bool gather_finite(const PatchBank& bank, EpisodeSource& source,
                     const std::vector<int64_t>& images, VecView<const float> theta,
                     PatchBatch& batch, TapTrainStats& stats);
  // One optimizer step's gradient into `grad` (plain: the batch NLL; MAML: the averaged
  // meta-gradient). Returns the step's loss, or NaN when no finite gradient could be formed.
  double plain_gradient(VecView<const float> theta, const PatchBank& bank, EpisodeSource& source,
                        TapTrainStats& st);
  double maml_gradient(VecView<const float> theta, const PatchBank& bank, EpisodeSource& source,
                       TapTrainStats& st);
  // Gradient evaluations of one MAML task: n_inner support gradients, one query gradient and,
  // second order, n_inner HVPs at two each.
  int64_t evals_per_task() const;
  // m_meta_grad = the mean of the meta-batch's task gradients, added in task order: task(b)
  // forms task b's gradient and returns where it lies, or nullptr to leave the task out.
  // Returns the tasks in the mean (none: m_meta_grad is left at zero).
  int64_t meta_batch_mean(int64_t B, const std::function<const float*(int64_t)>& task);
  // Batched tasks: flows set to B tasks (made on first use), and the meta-batch's averaged
  // meta-gradient into m_meta_grad from one batched pass over `tasks` (B row blocks).
  void ensure_batched_flows(int64_t B);
  // Whether MAML's meta-batch of B tasks runs as one pass here (train.batched_tasks).
  bool batched_tasks(int64_t B) const;
  void batched_meta_gradient(VecView<const float> theta, const TaskData<float>& tasks,
                             float alpha, double* support_loss, double* query_loss);

  // After a divergence: theta back to `good` (before any error, so even the error leaves usable
  // parameters), an error the kMaxDivergences-th time, else Adam's state restored and the
  // learning rate and MAML's inner step halved.
  static constexpr int kMaxDivergences = 3;
  void recover_from_divergence(VecView<float> theta, const Buffer<float>& good,
                               const OptimizerState<float>& good_state, Optimizer<float>& adam,
                               TapTrainStats& st);

  // What the training loop asks of a kind of step. Eager steps form and apply the gradient with
  // the host checking every step; captured steps (CUDA) replay a CUDA graph and read losses and
  // the parameter check every few steps instead. A check covers the steps since the last one:
  // their mean finite loss, or diverged (a non-finite batch loss, gradient or parameter).
  struct StepCheck {
    int64_t steps = 0;
    double loss = 0;
    bool diverged = false;
  };
  struct StepKind {
    std::function<void(int64_t step, TapTrainStats& st)> run;
    std::function<bool(int64_t step)> check_due;
    std::function<StepCheck()> check;
    std::function<void()> after_divergence;  // the guard restored theta and halved the steps
  };
  // The one training loop, with the divergence guard: the last good parameters are kept every
  // few good steps and restored when a check finds the steps diverged.
  TapTrainStats run_steps(const StepKind& kind, VecView<float> theta, int64_t steps,
                          Optimizer<float>& adam, const TrainProgress& progress);
  TapTrainStats train_eager(VecView<float> theta, const PatchBank& bank, EpisodeSource& source,
                            int64_t steps, const TrainProgress& progress, Optimizer<float>& adam);

  // The flows' checks while training (few: the trainer controls its own data).
  static FlowChecks training_checks();

  // Device-resident training (CUDA): the step is captured as a CUDA graph and replayed.
  struct GraphStep;
  bool graphs_enabled() const;
  TapTrainStats train_captured(VecView<float> theta, const PatchBank& bank,
                               EpisodeSource& source, int64_t steps,
                               const TrainProgress& progress, Optimizer<float>& adam);
  // After captured training: the flows' training checks back, the graph and its buffers freed.
  void release_capture();

  TrainSettings m_train;
  Device m_device;
  OwnedStream m_own_stream;  // CUDA: a stream of our own (graphs cannot capture the null one)
  Stream m_stream;
  CouplingFlow<float> m_flow_s, m_flow_q;
  MamlWorkspace<float> m_ws;
  // The meta-batch as one batched pass (train.batched_tasks, graph path): flows set to B tasks,
  // created on first use.
  std::unique_ptr<CouplingFlow<float>> m_flow_sb, m_flow_qb;
  MamlWorkspace<float> m_ws_b;
  Buffer<float> m_theta_b, m_meta_b;
  PatchBatch m_support_b, m_query_b;
  PatchBatch m_support, m_query;
  Buffer<float> m_grad, m_meta_grad;
  GradientObserver m_observer;
  float m_alpha = 0;  // the current inner learning rate (train.inner_lr, halved on divergence)
  std::unique_ptr<GraphStep> m_graph;
  GraphCensus m_census;
  // The SGD step on the summed NLL: alpha / D, i.e. alpha on the per-dimension NLL (CFlow's
  // loss scale). The NLL sums D dimensions, so its gradient grows with D; at alpha = 1e-3 on
  // the sum, one inner step threw a 112-channel flow to a query NLL of 1e37.
  float inner_step() const { return m_alpha / float(flow_config().dim); }
};

}  // namespace mirad
