// TapTrainer: plain and MAML training loops, adaptation and scoring of one tap's flow.
#include "engine/training/tap_trainer.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/nvtx.h"
#include "engine/flow/optimizer.h"
#include "kernels/patch_ops.h"
#include "kernels/vec_ops.h"

namespace mirad {

namespace {

// Training controls its own data flow (the bank was checked finite when it was built; the
// cache is always fresh), so the flows skip the per-call host checks; a non-finite loss is
// detected from the mean that each step reads back anyway.
FlowChecks training_checks() {
  FlowChecks c = FlowChecks::none();
  c.host_sync = true;
  return c;
}

}  // namespace

// What one captured step needs beyond the trainer's buffers: the graph, the host staging of the
// step's bank rows (pinned, so the graph's copy is a true async DMA), their device copy, one
// gathered batch per gather of the step, and per-step loss sums.
struct TapTrainer::GraphStep {
  StreamGraph graph;
  StreamEvent copied;      // the step's index copy has run: the staging may be refilled
  int64_t rows = 0;        // rows per drawn batch (fixed: a graph has fixed shapes)
  int64_t n_batches = 0;   // drawn batches: plain 1; MAML 2 per task
  bool batched = false;    // MAML with batched tasks: the supports of all tasks form one
                           // gathered batch, the queries another
  int64_t gathers = 0, gather_rows = 0;  // gathered batches and rows in each
  float alpha = 0;         // the inner step the graph was captured with
  PinnedBuffer<int64_t> idx_host;
  Buffer<int64_t> idx_dev;
  std::vector<PatchBatch> batches;
  Buffer<float> ones;      // for loss sums by dot products
  Buffer<double> losses;   // this step's loss sums (plain: 1; MAML: one per task)
};

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
  m_flow_s.set_precision(train.precision);
  m_flow_q.set_precision(train.precision);
  m_grad = Buffer<float>(n_params(), device);
  m_meta_grad = Buffer<float>(n_params(), device);
}

TapTrainer::~TapTrainer() = default;

int64_t TapTrainer::steps_for_budget(int64_t budget) const {
  if (m_train.mode == "plain") return std::max<int64_t>(1, budget);
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
  const bool maml = m_train.mode != "plain";
  m_alpha = float(m_train.inner_lr);
  if (graphs_enabled()) return train_graphed(theta, bank, source, steps, progress, state);
  const int64_t P = n_params();
  auto adam = make_optimizer<float>({{"type", "adam"}, {"lr", m_train.meta_lr}}, P, m_device);
  if (state && !state->slots.empty()) adam->import_state(*state, m_stream);
  // The last good point the divergence guard returns to.
  constexpr int64_t kSnapshotEvery = 10;
  Buffer<float> good(P, m_device);
  mem::copy(good.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
  OptimizerState<float> good_state = adam->export_state(m_stream);
  Buffer<unsigned long long> bad_count(1, m_device);
  TapTrainStats st;
  int64_t since_snapshot = 0;
  for (int64_t step = 0; step < steps; ++step) {
    const double loss = maml ? maml_gradient(theta, bank, source, st)
                             : plain_gradient(theta, bank, source, st);
    bool diverged = !std::isfinite(loss);
    if (!diverged) {
      if (m_observer) m_observer(step, (maml ? m_meta_grad : m_grad).to_host(m_stream));
      try {
        adam->step(theta.data, (maml ? m_meta_grad : m_grad).data(), P, m_stream);
      } catch (const InputError&) {
        diverged = true;  // a non-finite gradient: the step was not applied
      }
    }
    if (!diverged) {
      bad_count.zero(m_stream);
      vec::count_nonfinite<float>(P, theta.data, bad_count.data(), m_device, m_stream);
      diverged = bad_count.to_host(m_stream)[0] != 0;
    }
    if (diverged) {
      recover_from_divergence(theta, good, good_state, *adam, st);
      since_snapshot = 0;
      continue;
    }
    if (st.steps == 0) st.first_loss = loss;
    st.last_loss = loss;
    ++st.steps;
    if (++since_snapshot >= kSnapshotEvery) {
      mem::copy(good.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
      good_state = adam->export_state(m_stream);
      since_snapshot = 0;
    }
    if (progress) progress(step + 1, steps, loss);
  }
  st.final_lr = adam->learning_rate();
  st.final_inner_lr = m_alpha;
  if (state) *state = adam->export_state(m_stream);
  mem::synchronize(m_stream);
  return st;
}

bool TapTrainer::graphs_enabled() const {
  return m_train.cuda_graphs && stream_graphs_supported(m_device);
}

TapTrainStats TapTrainer::train_graphed(VecView<float> theta, const PatchBank& bank,
                                        EpisodeSource& source, int64_t steps,
                                        const TrainProgress& progress,
                                        OptimizerState<float>* state) {
  NVTX_RANGE("train_graphed");
  const bool maml = m_train.mode != "plain";
  const int64_t P = n_params(), B = maml ? m_train.meta_batch : 1;
  const int64_t per_task = m_train.n_inner + 1 + (m_train.second_order ? 2 * m_train.n_inner : 0);
  // The graph's flows read nothing back and never synchronise.
  FlowChecks none = FlowChecks::none();
  m_flow_s.set_checks(none);
  m_flow_q.set_checks(none);
  auto adam = make_optimizer<float>({{"type", "adam"}, {"lr", m_train.meta_lr}}, P, m_device);
  if (state && !state->slots.empty()) adam->import_state(*state, m_stream);

  // Draws a step's rows on the host: plain, one batch; MAML, support and query of B tasks.
  auto draw = [&] {
    std::vector<std::vector<int64_t>> r;
    for (int64_t b = 0; b < B; ++b) {
      if (maml) {
        const Episode ep = source.next_task();
        r.push_back(source.rows(ep.support, bank.hw(), m_train.positions));
        r.push_back(source.rows(ep.query, bank.hw(), m_train.positions));
      } else {
        r.push_back(source.rows(source.next_batch(), bank.hw(), m_train.positions));
      }
    }
    return r;
  };
  auto first = draw();
  const int64_t rows = int64_t(first[0].size());
  for (const auto& r : first)
    CHECK_THROW(int64_t(r.size()) == rows);  // tasks of one size (pool >= |S| + |Q|)
  GraphStep& g = *(m_graph = std::make_unique<GraphStep>());
  g.rows = rows;
  g.n_batches = int64_t(first.size());
  g.batched = maml && batched_tasks(B);
  g.gathers = g.batched ? 2 : g.n_batches;
  g.gather_rows = g.batched ? B * rows : rows;
  g.idx_host = PinnedBuffer<int64_t>(size_t(g.n_batches * rows));
  g.idx_dev = Buffer<int64_t>(size_t(g.n_batches * rows), m_device);
  g.batches.resize(g.gathers);
  for (auto& pb : g.batches) {
    pb.x = Buffer<float>(g.gather_rows * bank.channels(), m_device);
    if (bank.cond_dim()) pb.c = Buffer<float>(g.gather_rows * bank.cond_dim(), m_device);
    pb.rows = g.gather_rows, pb.dim = bank.channels(), pb.cond_dim = bank.cond_dim();
  }
  if (g.batched) {
    ensure_batched_flows(B);
    m_flow_sb->set_checks(none);
    m_flow_qb->set_checks(none);
  }
  g.ones = Buffer<float>::from_host(std::vector<float>(rows, 1.0f), m_device, m_stream);
  g.losses = Buffer<double>(size_t(B), m_device);
  g.copied = StreamEvent(m_device);
  // Drawn batch k's place in the staging: in draw order, or, batched, task b's support at
  // block b and its query at block B + b.
  auto slot = [&](int64_t k) { return g.batched ? (k % 2) * B + k / 2 : k; };
  auto stage = [&](const std::vector<std::vector<int64_t>>& r) {
    const int64_t n_rows = bank.n_images() * bank.hw();
    for (int64_t k = 0; k < g.n_batches; ++k)
      for (int64_t j = 0; j < rows; ++j) {
        CHECK_THROW(r[k][j] >= 0 && r[k][j] < n_rows);
        g.idx_host.data()[slot(k) * rows + j] = r[k][j];
      }
  };
  // The step's device work: copy the staged rows, gather, gradient into m_grad (plain) or
  // m_meta_grad (MAML), loss sums into g.losses.
  auto body = [&] {
    mem::copy(g.idx_dev.data(), m_device, g.idx_host.data(), Device::cpu,
              sizeof(int64_t) * g.n_batches * rows, m_stream);
    g.copied.record(m_stream);
    const int64_t n_rows = bank.n_images() * bank.hw();
    for (int64_t k = 0; k < g.gathers; ++k) {
      PatchBatch& pb = g.batches[k];
      patchops::gather_rows(g.gather_rows, g.idx_dev.data() + k * g.gather_rows,
                            bank.image_rows(0, bank.n_images()).data,
                            bank.channels(), n_rows, bank.cond_dim() ? bank.condition_table() : nullptr,
                            bank.hw(), bank.cond_dim(), pb.x.data(), bank.cond_dim() ? pb.c.data() : nullptr,
                            m_device, m_stream);
    }
    if (!maml) {
      m_flow_s.forward_async(theta, g.batches[0].xv(), g.batches[0].cv());
      m_flow_s.backward(theta, g.batches[0].xv(), g.batches[0].cv(), m_grad);
      vec::dot<float>(rows, m_flow_s.nll_device(), g.ones.data(), g.losses.data(), m_device, m_stream);
      return;
    }
    if (g.batched) {
      const PatchBatch& S = g.batches[0];
      const PatchBatch& Q = g.batches[1];
      batched_meta_gradient(theta, {S.xv(), S.cv(), Q.xv(), Q.cv()}, g.alpha, nullptr, nullptr);
      for (int64_t b = 0; b < B; ++b)
        vec::dot<float>(rows, m_flow_qb->nll_device() + b * rows, g.ones.data(),
                        g.losses.data() + b, m_device, m_stream);
      return;
    }
    vec::fill<float>(P, 0.0f, m_meta_grad.data(), m_device, m_stream);
    for (int64_t b = 0; b < B; ++b) {
      const PatchBatch& S = g.batches[2 * b];
      const PatchBatch& Q = g.batches[2 * b + 1];
      TaskData<float> task{S.xv(), S.cv(), Q.xv(), Q.cv()};
      meta_gradient(m_flow_s, m_flow_q, VecView<const float>(theta), task, m_train.n_inner,
                    g.alpha, m_train.second_order, VecView<float>(m_grad), m_ws);
      vec::dot<float>(rows, m_flow_q.nll_device(), g.ones.data(), g.losses.data() + b, m_device,
                      m_stream);
      vec::axpy<float>(P, 1.0f, m_grad.data(), m_meta_grad.data(), m_device, m_stream);
    }
    vec::scale<float>(P, 1.0f / float(B), m_meta_grad.data(), m_device, m_stream);
  };
  // Captures the step with the current inner step; run once eagerly first so every workspace
  // (flow caches, reduction scratch) exists before the capture.
  auto recapture = [&] {
    g.alpha = inner_step();
    g.graph.reset();
    Buffer<float> keep(P, m_device);
    mem::copy(keep.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
    body();
    mem::copy(theta.data, m_device, keep.data(), m_device, sizeof(float) * P, m_stream);
    mem::synchronize(m_stream);
    g.graph.capture(m_stream, body);
    m_census = g.graph.census();
  };
  stage(first);
  recapture();

  constexpr int64_t kCheckEvery = 10;
  Buffer<float> good(P, m_device);
  mem::copy(good.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
  OptimizerState<float> good_state = adam->export_state(m_stream);
  Buffer<double> ring(size_t(kCheckEvery * B), m_device);
  Buffer<unsigned long long> bad_count(1, m_device);
  TapTrainStats st;
  std::vector<std::vector<int64_t>> next = std::move(first);
  int64_t in_ring = 0, since_good = 0;
  for (int64_t step = 0; step < steps; ++step) {
    if (step > 0) {
      next = draw();  // host work overlaps the previous step's device work
      g.copied.synchronize();
      stage(next);
    }
    g.graph.launch(m_stream);
    st.evals += maml ? B * per_task : 1;
    if (m_observer) m_observer(step, (maml ? m_meta_grad : m_grad).to_host(m_stream));
    adam->step_gated(theta.data, (maml ? m_meta_grad : m_grad).data(), P, m_stream);
    mem::copy(ring.data() + in_ring * B, m_device, g.losses.data(), m_device, sizeof(double) * B,
              m_stream);
    ++in_ring, ++since_good;
    if (in_ring < kCheckEvery && step + 1 < steps) continue;
    // Every few steps: the losses and a parameter check, one host round-trip.
    bad_count.zero(m_stream);
    vec::count_nonfinite<float>(P, theta.data, bad_count.data(), m_device, m_stream);
    std::vector<double> losses(size_t(in_ring * B));
    mem::copy(losses.data(), Device::cpu, ring.data(), m_device, sizeof(double) * losses.size(),
              m_stream);
    const bool params_bad = bad_count.to_host(m_stream)[0] != 0;
    double sum = 0;
    int64_t finite_steps = 0;
    for (int64_t k = 0; k < in_ring; ++k) {
      double step_loss = 0;
      for (int64_t b = 0; b < B; ++b) step_loss += losses[k * B + b];
      step_loss /= double(B * rows);
      if (std::isfinite(step_loss)) sum += step_loss, ++finite_steps;
    }
    const int64_t window = in_ring;
    in_ring = 0;
    if (params_bad || finite_steps == 0) {
      recover_from_divergence(theta, good, good_state, *adam, st);
      if (maml) recapture();  // the inner step is a constant of the captured graph
      since_good = 0;
      continue;
    }
    // Steps whose loss was not finite were skipped on the device (the update is gated).
    const double mean = sum / double(finite_steps);
    if (st.steps == 0) st.first_loss = mean;
    st.last_loss = mean;
    st.steps += window;
    mem::copy(good.data(), m_device, theta.data, m_device, sizeof(float) * P, m_stream);
    good_state = adam->export_state(m_stream);
    since_good = 0;
    if (progress) progress(step + 1, steps, mean);
  }
  (void)since_good;
  st.final_lr = adam->learning_rate();
  st.final_inner_lr = m_alpha;
  if (state) *state = adam->export_state(m_stream);
  mem::synchronize(m_stream);
  m_flow_s.set_checks(training_checks());
  m_flow_q.set_checks(training_checks());
  if (m_flow_sb) m_flow_sb->set_checks(training_checks()), m_flow_qb->set_checks(training_checks());
  m_graph.reset();
  return st;
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

bool TapTrainer::batched_tasks(int64_t B) const {
  if (B <= 1) return false;
  const std::string& mode = m_train.batched_tasks;
  return mode == "on" || (mode == "auto" && m_device == Device::cuda);
}

void TapTrainer::ensure_batched_flows(int64_t B) {
  if (m_flow_sb && m_flow_sb->tasks() == B) return;
  auto make = [&] {
    auto f = std::make_unique<CouplingFlow<float>>(m_flow_s.config(), m_device, m_stream);
    f->set_tasks(B);
    f->set_precision(m_train.precision);
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
  vec::fill<float>(P, 0.0f, m_meta_grad.data(), m_device, m_stream);
  for (int64_t b = 0; b < B; ++b)
    vec::axpy<float>(P, 1.0f, m_meta_b.data() + b * P, m_meta_grad.data(), m_device, m_stream);
  vec::scale<float>(P, 1.0f / float(B), m_meta_grad.data(), m_device, m_stream);
  if (support_loss) *support_loss = info.support_loss;
  if (query_loss) *query_loss = info.query_loss;
}

double TapTrainer::maml_gradient(VecView<const float> theta, const PatchBank& bank,
                                 EpisodeSource& source, TapTrainStats& st) {
  NVTX_RANGE("maml_step");
  const int64_t P = n_params(), B = m_train.meta_batch;
  const float alpha = inner_step();
  const int64_t per_task =
      m_train.n_inner + 1 + (m_train.second_order ? 2 * m_train.n_inner : 0);
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
  vec::fill<float>(P, 0.0f, m_meta_grad.data(), m_device, m_stream);
  double query_loss = 0;
  int64_t tasks = 0;
  for (int64_t b = 0; b < B; ++b) {
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
        continue;
      task = {m_support.xv(), m_support.cv(), m_query.xv(), m_query.cv()};
      info = meta_gradient(m_flow_s, m_flow_q, theta, task, m_train.n_inner, alpha,
                           m_train.second_order, VecView<float>(m_grad), m_ws);
      st.evals += per_task;
      if (!std::isfinite(info.support_loss) || !std::isfinite(info.query_loss)) continue;
    }
    vec::axpy<float>(P, 1.0f, m_grad.data(), m_meta_grad.data(), m_device, m_stream);
    query_loss += info.query_loss;
    ++tasks;
  }
  if (tasks == 0) return NAN;
  vec::scale<float>(P, 1.0f / float(tasks), m_meta_grad.data(), m_device, m_stream);
  return query_loss / double(tasks);
}

void TapTrainer::adapt(VecView<const float> theta0, VecView<float> theta, const PatchBank& bank,
                       EpisodeSource& source, TapTrainStats* stats) {
  NVTX_RANGE("adapt");
  CHECK_INPUT(theta.size == n_params() && theta0.size == n_params(),
              "trainer: adapt() buffers do not fit the flow");
  mem::copy(theta.data, m_device, theta0.data, m_device, sizeof(float) * n_params(), m_stream);
  if (m_train.mode == "plain") {
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

namespace {

// Scores are always FP32: tensor-core precision (train.precision) is for training, so the
// calibration scores a threshold comes from and every later score use the same arithmetic,
// on any device. Restores the training precision when the scope ends.
class Fp32Scope {
 public:
  Fp32Scope(CouplingFlow<float>& flow, std::string training) : m_flow(flow), m_training(std::move(training)) {
    if (m_training != "fp32") m_flow.set_precision("fp32");
  }
  ~Fp32Scope() {
    if (m_training != "fp32") m_flow.set_precision(m_training);
  }
  Fp32Scope(const Fp32Scope&) = delete;
  Fp32Scope& operator=(const Fp32Scope&) = delete;

 private:
  CouplingFlow<float>& m_flow;
  std::string m_training;
};

}  // namespace

std::vector<float> TapTrainer::score(VecView<const float> theta, const PatchBank& bank,
                                     const std::vector<int64_t>& images) {
  NVTX_RANGE("score");
  std::vector<float> out(images.size() * bank.hw());
  if (m_device == Device::cpu) {
    score_into(theta, bank, images, out.data());
    return out;
  }
  Buffer<float> nll(out.size(), m_device);
  score_into(theta, bank, images, nll.data());
  mem::copy(out.data(), Device::cpu, nll.data(), m_device, sizeof(float) * out.size(), m_stream);
  mem::synchronize(m_stream);
  return out;
}

void TapTrainer::score_into(VecView<const float> theta, const PatchBank& bank,
                            const std::vector<int64_t>& images, float* out) {
  NVTX_RANGE("score_into");
  const Fp32Scope fp32(m_flow_s, m_train.precision);
  CHECK_INPUT(theta.size == n_params() && theta.device == m_device,
              "trainer: score_into() parameters do not fit the flow");
  const int64_t hw = bank.hw(), max_images = bank.max_score_images();
  size_t i = 0;
  while (i < images.size()) {
    size_t j = i + 1;
    while (j < images.size() && int64_t(j - i) < max_images && images[j] == images[j - 1] + 1)
      ++j;
    const int64_t count = int64_t(j - i);
    // The training checks read nothing back; the copy is ordered after the forward on the
    // stream, before the next forward reuses the NLL buffer.
    m_flow_s.forward_async(theta, bank.image_rows(images[i], count), bank.image_condition(count));
    mem::copy(out + i * hw, m_device, m_flow_s.nll_device(), m_device,
              sizeof(float) * size_t(count * hw), m_stream);
    i = j;
  }
}

}  // namespace mirad
