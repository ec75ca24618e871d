// TapTrainer's captured steps (CUDA): each training step recorded once as a CUDA graph and
// replayed, its rows staged in pinned memory while the previous step runs, losses and the
// parameter check read back every few steps. run_steps() drives them like the eager steps.
#include "engine/training/tap_trainer.h"
#include "engine/training/tap_trainer_graph_step.h"

#include <cmath>

#include "core/error.h"
#include "core/nvtx.h"
#include "kernels/patch_ops.h"
#include "kernels/vec_ops.h"

namespace mirad {

TapTrainStats TapTrainer::train_captured(VecView<float> theta, const PatchBank& bank,
                                         EpisodeSource& source, int64_t steps,
                                         const TrainProgress& progress, Optimizer<float>& adam) {
  NVTX_RANGE("train_captured");
  const bool maml = m_train.mode == TrainMode::maml;
  const int64_t P = n_params(), B = maml ? m_train.meta_batch : 1;
  const int64_t per_task = evals_per_task();
  // The graph's flows read nothing back and never synchronise.
  FlowChecks none = FlowChecks::none();
  m_flow_s.set_checks(none);
  m_flow_q.set_checks(none);

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
    meta_batch_mean(B, [&](int64_t b) {
      const PatchBatch& S = g.batches[2 * b];
      const PatchBatch& Q = g.batches[2 * b + 1];
      TaskData<float> task{S.xv(), S.cv(), Q.xv(), Q.cv()};
      meta_gradient(m_flow_s, m_flow_q, VecView<const float>(theta), task, m_train.n_inner,
                    g.alpha, m_train.second_order, VecView<float>(m_grad), m_ws);
      vec::dot<float>(rows, m_flow_q.nll_device(), g.ones.data(), g.losses.data() + b, m_device,
                      m_stream);
      return static_cast<const float*>(m_grad.data());
    });
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
  Buffer<double> ring(size_t(kCheckEvery * B), m_device);
  Buffer<unsigned long long> bad_count(1, m_device);
  std::vector<std::vector<int64_t>> next = std::move(first);
  int64_t in_ring = 0;
  StepKind kind;
  kind.run = [&](int64_t step, TapTrainStats& st) {
    if (step > 0) {
      next = draw();  // host work overlaps the previous step's device work
      g.copied.synchronize();
      stage(next);
    }
    g.graph.launch(m_stream);
    st.evals += maml ? B * per_task : 1;
    if (m_observer) m_observer(step, (maml ? m_meta_grad : m_grad).to_host(m_stream));
    // Steps whose loss was not finite are skipped on the device (the update is gated).
    adam.step_gated(theta.data, (maml ? m_meta_grad : m_grad).data(), P, m_stream);
    mem::copy(ring.data() + in_ring * B, m_device, g.losses.data(), m_device, sizeof(double) * B,
              m_stream);
    ++in_ring;
  };
  kind.check_due = [&](int64_t step) { return in_ring >= kCheckEvery || step + 1 >= steps; };
  // The losses and a parameter check, one host round-trip.
  kind.check = [&] {
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
    StepCheck c;
    c.steps = in_ring;
    c.diverged = params_bad || finite_steps == 0;
    c.loss = c.diverged ? NAN : sum / double(finite_steps);
    in_ring = 0;
    return c;
  };
  kind.after_divergence = [&] {
    if (maml) recapture();  // the inner step is a constant of the captured graph
  };
  return run_steps(kind, theta, steps, adam, progress);
}

void TapTrainer::release_capture() {
  m_flow_s.set_checks(training_checks());
  m_flow_q.set_checks(training_checks());
  if (m_flow_sb) m_flow_sb->set_checks(training_checks()), m_flow_qb->set_checks(training_checks());
  m_graph.reset();
}

}  // namespace mirad
