// TapTrainer: the training loop and its eager steps (plain and MAML), and adaptation.
#include "engine/training/tap_trainer.h"
#include "engine/training/tap_trainer_graph_step.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/nvtx.h"
#include "engine/flow/optimizer.h"
#include "kernels/vec_ops.h"

namespace mirad {

// Training controls its own data flow (the bank was checked finite when it was built; the
// cache is always fresh), so the flows skip the per-call host checks; a non-finite loss is
// detected from the mean that each step reads back anyway.
FlowChecks TapTrainer::training_checks() {
  FlowChecks c = FlowChecks::none();
  c.host_sync = true;
  return c;
}

namespace {

Stream pick_stream(Device device, Stream given, const OwnedStream& own) {
  return device == Device::cuda && !given.handle ? own.get() : given;
}

}  // namespace

TapTrainer::TapTrainer(const FlowConfig& flow, const TrainSettings& train, Device device,
                       Stream stream)
    : m_train(train), m_device(device),
      m_own_stream(device == Device::cuda && !stream.handle ? OwnedStream(device) : OwnedStream()),
      m_stream(pick_stream(device, stream, m_own_stream)), m_flow_s(flow, device, m_stream),
      m_flow_q(flow, device, m_stream), m_alpha(float(train.inner_lr)) {
  m_flow_s.set_checks(training_checks());
  m_flow_q.set_checks(training_checks());
  m_flow_s.set_precision(name_of(train.precision));
  m_flow_q.set_precision(name_of(train.precision));
  m_grad = Buffer<float>(n_params(), device);
  m_meta_grad = Buffer<float>(n_params(), device);
}

TapTrainer::~TapTrainer() = default;

int64_t TapTrainer::steps_for_budget(int64_t budget) const {
  if (m_train.mode == TrainMode::plain) return std::max<int64_t>(1, budget);
  DetectorConfig c;
  c.train = m_train;
  return std::max<int64_t>(1, (budget - m_train.n_final) / c.evals_per_step());
}

Buffer<float> TapTrainer::init_params(const PatchBank& bank, EpisodeSource& source) {
  Buffer<float> theta = m_flow_s.init_params();
  // ActNorm from a larger sample than one step's batch: its statistics set the output scale.
  auto images = source.next_batch();
  for (int i = 0; i < 3; ++i) {
    auto more = source.next_batch();
    images.insert(images.end(), more.begin(), more.end());
  }
  std::sort(images.begin(), images.end());
  images.erase(std::unique(images.begin(), images.end()), images.end());
  bank.gather(source.rows(images, bank.hw(), m_train.positions), m_support, m_stream);
  FlowChecks strict;
  m_flow_s.set_checks(strict);
  m_flow_s.init_actnorm(theta, m_support.xv(), m_support.cv());
  m_flow_s.set_checks(training_checks());
  return theta;
}

bool TapTrainer::gather_finite(const PatchBank& bank, EpisodeSource& source,
                               const std::vector<int64_t>& images, VecView<const float> theta,
                               PatchBatch& batch, TapTrainStats& stats) {
  auto rows = source.rows(images, bank.hw(), m_train.positions);
  bank.gather(rows, batch, m_stream);
  std::vector<float> nll;
  m_flow_s.forward(theta, batch.xv(), batch.cv(), {}, &nll);
  std::vector<int64_t> keep;
  std::set<int64_t> flagged;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (std::isfinite(nll[i]))
      keep.push_back(rows[i]);
    else
      flagged.insert(rows[i] / bank.hw());
  }
  stats.masked_rows += int64_t(rows.size() - keep.size());
  for (int64_t f : flagged)
    if (std::find(stats.flagged_images.begin(), stats.flagged_images.end(), f) ==
        stats.flagged_images.end())
      stats.flagged_images.push_back(f);
  if (keep.empty()) return false;
  bank.gather(keep, batch, m_stream);
  return true;
}

void TapTrainer::recover_from_divergence(VecView<float> theta, const Buffer<float>& good,
                                         const OptimizerState<float>& good_state,
                                         Optimizer<float>& adam, TapTrainStats& st) {
  ++st.divergences;
  mem::copy(theta.data, m_device, good.data(), m_device, sizeof(float) * theta.size, m_stream);
  mem::synchronize(m_stream);
  CHECK_INPUT(st.divergences < kMaxDivergences,
              "training diverged {} times (non-finite loss or parameters; the learning rate "
              "and inner step were halved each time, the last try used {:.3g} and {:.3g}): "
              "lower train.meta_lr or train.inner_lr, or check the features",
              st.divergences, adam.learning_rate(), double(m_alpha));
  adam.import_state(good_state, m_stream);
  adam.set_learning_rate(adam.learning_rate() * 0.5);
  // MAML's inner step can be what blows up (theta_1 = theta_0 - alpha*g with a large g): it is
  // halved too, and the adaptation uses the reduced step.
  m_alpha *= 0.5f;
}

TapTrainStats TapTrainer::train(VecView<float> theta, const PatchBank& bank,
                                EpisodeSource& source, int64_t budget,
                                const TrainProgress& progress, OptimizerState<float>* state) {
  CHECK_INPUT(theta.size == n_params() && theta.device == m_device,
              "trainer: parameter buffer has {} values on {}, the flow {} on {}", theta.size,
              device_name(theta.device), n_params(), device_name(m_device));
  CHECK_INPUT(bank.channels() == flow_config().dim, "trainer: bank has {} channels, flow dim {}",
              bank.channels(), flow_config().dim);
  NVTX_RANGE("train");
  const int64_t steps = steps_for_budget(budget);
  m_alpha = float(m_train.inner_lr);
  const bool captured = graphs_enabled();
  auto adam =
      make_optimizer<float>({{"type", "adam"}, {"lr", m_train.meta_lr}}, n_params(), m_device);
  if (state && !state->slots.empty()) adam->import_state(*state, m_stream);
  TapTrainStats st = captured ? train_captured(theta, bank, source, steps, progress, *adam)
                              : train_eager(theta, bank, source, steps, progress, *adam);
  st.final_lr = adam->learning_rate();
  st.final_inner_lr = m_alpha;
  if (state) *state = adam->export_state(m_stream);
  mem::synchronize(m_stream);
  if (captured) release_capture();
  return st;
}

TapTrainStats TapTrainer::run_steps(const StepKind& kind, VecView<float> theta, int64_t steps,
                                    Optimizer<float>& adam, const TrainProgress& progress) {
  const int64_t P = n_params();
  // The last good point the divergence guard returns to.
  constexpr int64_t kSnapshotEvery = 10;
  Buffer<float> good(P, m_device);
  mem::copy(good.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
  OptimizerState<float> good_state = adam.export_state(m_stream);
  TapTrainStats st;
  int64_t since_snapshot = 0;
  for (int64_t step = 0; step < steps; ++step) {
    kind.run(step, st);
    if (!kind.check_due(step)) continue;
    const StepCheck c = kind.check();
    if (c.diverged) {
      recover_from_divergence(theta, good, good_state, adam, st);
      if (kind.after_divergence) kind.after_divergence();
      since_snapshot = 0;
      continue;
    }
    if (st.steps == 0) st.first_loss = c.loss;
    st.last_loss = c.loss;
    st.steps += c.steps;
    since_snapshot += c.steps;
    if (since_snapshot >= kSnapshotEvery) {
      mem::copy(good.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
      good_state = adam.export_state(m_stream);
      since_snapshot = 0;
    }
    if (progress) progress(step + 1, steps, c.loss);
  }
  return st;
}

TapTrainStats TapTrainer::train_eager(VecView<float> theta, const PatchBank& bank,
                                      EpisodeSource& source, int64_t steps,
                                      const TrainProgress& progress, Optimizer<float>& adam) {
  const bool maml = m_train.mode == TrainMode::maml;
  const int64_t P = n_params();
  Buffer<unsigned long long> bad_count(1, m_device);
  StepCheck last;
  StepKind kind;
  kind.run = [&](int64_t step, TapTrainStats& st) {
    const double loss = maml ? maml_gradient(theta, bank, source, st)
                             : plain_gradient(theta, bank, source, st);
    bool diverged = !std::isfinite(loss);
    if (!diverged) {
      if (m_observer) m_observer(step, (maml ? m_meta_grad : m_grad).to_host(m_stream));
      try {
        adam.step(theta.data, (maml ? m_meta_grad : m_grad).data(), P, m_stream);
      } catch (const InputError&) {
        diverged = true;  // a non-finite gradient: the step was not applied
      }
    }
    if (!diverged) {
      bad_count.zero(m_stream);
      vec::count_nonfinite<float>(P, theta.data, bad_count.data(), m_device, m_stream);
      diverged = bad_count.to_host(m_stream)[0] != 0;
    }
    last = {1, loss, diverged};
  };
  kind.check_due = [](int64_t) { return true; };
  kind.check = [&] { return last; };
  return run_steps(kind, theta, steps, adam, progress);
}

bool TapTrainer::graphs_enabled() const {
  return m_train.cuda_graphs && stream_graphs_supported(m_device);
}

double TapTrainer::plain_gradient(VecView<const float> theta, const PatchBank& bank,
                                  EpisodeSource& source, TapTrainStats& st) {
  const auto images = source.next_batch();
  bank.gather(source.rows(images, bank.hw(), m_train.positions), m_support, m_stream);
  double loss = m_flow_s.grad_at(theta, m_support.xv(), m_support.cv(), m_grad);
  if (!std::isfinite(loss)) {
    // Leave out the rows whose NLL is not finite (a contaminant can produce them); when none
    // is left the step fails, which the divergence guard handles.
    if (!gather_finite(bank, source, images, theta, m_support, st)) return NAN;
    loss = m_flow_s.grad_at(theta, m_support.xv(), m_support.cv(), m_grad);
  }
  st.evals += 1;
  return loss;
}

int64_t TapTrainer::evals_per_task() const {
  return m_train.n_inner + 1 + (m_train.second_order ? 2 * m_train.n_inner : 0);
}

int64_t TapTrainer::meta_batch_mean(int64_t B,
                                    const std::function<const float*(int64_t)>& task) {
  const int64_t P = n_params();
  vec::fill<float>(P, 0.0f, m_meta_grad.data(), m_device, m_stream);
  int64_t n = 0;
  for (int64_t b = 0; b < B; ++b) {
    const float* grad = task(b);
    if (!grad) continue;
    vec::axpy<float>(P, 1.0f, grad, m_meta_grad.data(), m_device, m_stream);
    ++n;
  }
  if (n > 0) vec::scale<float>(P, 1.0f / float(n), m_meta_grad.data(), m_device, m_stream);
  return n;
}

bool TapTrainer::batched_tasks(int64_t B) const {
  if (B <= 1) return false;
  const TaskBatching mode = m_train.batched_tasks;
  return mode == TaskBatching::on || (mode == TaskBatching::automatic && m_device == Device::cuda);
}

void TapTrainer::ensure_batched_flows(int64_t B) {
  if (m_flow_sb && m_flow_sb->tasks() == B) return;
  auto make = [&] {
    auto f = std::make_unique<CouplingFlow<float>>(m_flow_s.config(), m_device, m_stream);
    f->set_tasks(B);
    f->set_precision(name_of(m_train.precision));
    f->set_checks(training_checks());
    return f;
  };
  m_flow_sb = make(), m_flow_qb = make();
  m_theta_b = Buffer<float>(B * n_params(), m_device);
  m_meta_b = Buffer<float>(B * n_params(), m_device);
}

void TapTrainer::batched_meta_gradient(VecView<const float> theta, const TaskData<float>& tasks,
                                       float alpha, double* support_loss, double* query_loss) {
  const int64_t P = n_params(), B = m_flow_sb->tasks();
  // theta_0 for every task, all B meta-gradients in one pass, then their mean. The sum runs
  // over the tasks in order, as the per-task loop adds them.
  for (int64_t b = 0; b < B; ++b)
    mem::copy(m_theta_b.data() + b * P, m_device, theta.data, m_device, sizeof(float) * P,
              m_stream);
  const MetaGradientInfo info =
      meta_gradient(*m_flow_sb, *m_flow_qb, VecView<const float>(m_theta_b), tasks,
                    m_train.n_inner, alpha, m_train.second_order, VecView<float>(m_meta_b), m_ws_b);
  meta_batch_mean(B, [&](int64_t b) { return static_cast<const float*>(m_meta_b.data() + b * P); });
  if (support_loss) *support_loss = info.support_loss;
  if (query_loss) *query_loss = info.query_loss;
}

double TapTrainer::maml_gradient(VecView<const float> theta, const PatchBank& bank,
                                 EpisodeSource& source, TapTrainStats& st) {
  NVTX_RANGE("maml_step");
  const int64_t B = m_train.meta_batch;
  const float alpha = inner_step();
  const int64_t per_task = evals_per_task();
  // The meta-batch's episodes and rows, drawn in the order the tasks run.
  std::vector<Episode> eps;
  std::vector<std::vector<int64_t>> s_rows, q_rows;
  bool equal = true;
  for (int64_t b = 0; b < B; ++b) {
    eps.push_back(source.next_task());
    s_rows.push_back(source.rows(eps[b].support, bank.hw(), m_train.positions));
    q_rows.push_back(source.rows(eps[b].query, bank.hw(), m_train.positions));
    equal = equal && s_rows[b].size() == s_rows[0].size() && q_rows[b].size() == q_rows[0].size();
  }
  if (batched_tasks(B) && equal) {
    // Fast path: all tasks in one batched pass. A task with a non-finite NLL makes the means
    // non-finite; the step is then redone task by task below, where such rows are left out.
    ensure_batched_flows(B);
    std::vector<int64_t> all_s, all_q;
    for (int64_t b = 0; b < B; ++b) {
      all_s.insert(all_s.end(), s_rows[b].begin(), s_rows[b].end());
      all_q.insert(all_q.end(), q_rows[b].begin(), q_rows[b].end());
    }
    bank.gather(all_s, m_support_b, m_stream);
    bank.gather(all_q, m_query_b, m_stream);
    double support_loss = 0, query_loss = 0;
    batched_meta_gradient(theta,
                          {m_support_b.xv(), m_support_b.cv(), m_query_b.xv(), m_query_b.cv()},
                          alpha, &support_loss, &query_loss);
    st.evals += B * per_task;
    if (std::isfinite(support_loss) && std::isfinite(query_loss)) return query_loss;
  }
  double query_loss = 0;
  const int64_t tasks = meta_batch_mean(B, [&](int64_t b) -> const float* {
    const Episode& ep = eps[b];
    bank.gather(s_rows[b], m_support, m_stream);
    bank.gather(q_rows[b], m_query, m_stream);
    TaskData<float> task{m_support.xv(), m_support.cv(), m_query.xv(), m_query.cv()};
    MetaGradientInfo info = meta_gradient(m_flow_s, m_flow_q, theta, task, m_train.n_inner,
                                          alpha, m_train.second_order, VecView<float>(m_grad), m_ws);
    st.evals += per_task;
    if (!std::isfinite(info.support_loss) || !std::isfinite(info.query_loss)) {
      // Leave out the rows that are not finite at theta_0 and try the task once more.
      if (!gather_finite(bank, source, ep.support, theta, m_support, st) ||
          !gather_finite(bank, source, ep.query, theta, m_query, st))
        return nullptr;
      task = {m_support.xv(), m_support.cv(), m_query.xv(), m_query.cv()};
      info = meta_gradient(m_flow_s, m_flow_q, theta, task, m_train.n_inner, alpha,
                           m_train.second_order, VecView<float>(m_grad), m_ws);
      st.evals += per_task;
      if (!std::isfinite(info.support_loss) || !std::isfinite(info.query_loss)) return nullptr;
    }
    query_loss += info.query_loss;
    return m_grad.data();
  });
  if (tasks == 0) return NAN;
  return query_loss / double(tasks);
}

void TapTrainer::adapt(VecView<const float> theta0, VecView<float> theta, const PatchBank& bank,
                       EpisodeSource& source, TapTrainStats* stats) {
  NVTX_RANGE("adapt");
  CHECK_INPUT(theta.size == n_params() && theta0.size == n_params(),
              "trainer: adapt() buffers do not fit the flow");
  mem::copy(theta.data, m_device, theta0.data, m_device, sizeof(float) * n_params(), m_stream);
  if (m_train.mode == TrainMode::plain) {
    mem::synchronize(m_stream);
    return;
  }
  TapTrainStats local;
  TapTrainStats& st = stats ? *stats : local;
  const float alpha = inner_step();
  for (int64_t step = 0; step < m_train.n_final; ++step) {
    const auto images = source.next_batch();
    bank.gather(source.rows(images, bank.hw(), m_train.positions), m_support, m_stream);
    double loss = m_flow_s.grad_at(theta, m_support.xv(), m_support.cv(), m_grad);
    if (!std::isfinite(loss)) {
      if (!gather_finite(bank, source, images, theta, m_support, st)) continue;
      loss = m_flow_s.grad_at(theta, m_support.xv(), m_support.cv(), m_grad);
      if (!std::isfinite(loss)) continue;
    }
    ++st.evals;
    vec::axpy<float>(n_params(), -alpha, m_grad.data(), theta.data, m_device, m_stream);
  }
  mem::synchronize(m_stream);
}

}  // namespace mirad
