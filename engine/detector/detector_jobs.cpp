// DetectorJobs: the (detector, tap) jobs of refinement, serial or on CPU workers.
#include "engine/detector/detector_jobs.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <mutex>
#include <thread>

#include "core/error.h"
#include "engine/detector/refine_seeds.h"
#include "engine/training/tap_trainer.h"

namespace mirad {

DetectorJobs::DetectorJobs(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
                           const EpisodeSourceFactory& episodes, Device device,
                           const RefineOptions& opt)
    : m_banks(banks), m_cfg(cfg), m_episodes(episodes), m_device(device), m_opt(opt) {
  for (size_t t = 0; t < banks.size(); ++t)
    m_flows.push_back(tap_flow_config(cfg, banks[t]->channels(), int64_t(t)));
  m_workers = device == Device::cpu ? std::max(1, opt.workers) : 1;
}

DetectorJobs::~DetectorJobs() = default;

std::vector<TrainOutcome> DetectorJobs::train(const std::vector<TrainSpec>& specs) {
  for (const TrainSpec& sp : specs) {
    // Cross-fit puts identical images into one fold (so that no copy vouches for another):
    // a set of copies leaves the other folds' detectors nothing to train on, whatever the
    // number of folds, and only in-sample scoring can help.
    CHECK_INPUT(sp.images.size() >= 2 || sp.phase.find("fold") == std::string::npos,
                "refinement: {} has {} training images; at least 2 are needed. Cross-fit "
                "keeps identical images in one fold, so a set of (nearly all) copies of one "
                "image cannot be cross-fit: use --set refine.scoring=in_sample; otherwise "
                "fewer folds or more images", sp.phase, sp.images.size());
    CHECK_INPUT(sp.images.size() >= 2,
                "refinement: {} has {} training images; at least 2 are needed (a larger "
                "min_keep, or more images)", sp.phase, sp.images.size());
  }
  const size_t T = m_banks.size();
  std::vector<TrainOutcome> out(specs.size());
  for (auto& o : out) {
    o.model.taps.resize(T);
    o.maps.grids.resize(T);
    o.maps.nll.resize(T);
  }
  std::vector<double> losses(specs.size() * T, 0.0);
  std::vector<std::vector<int64_t>> flagged(specs.size() * T);
  const size_t n_jobs = specs.size() * T;
  auto job = [&](size_t j, Trainers& trainers) {
    const size_t s = j / T, t = j % T;
    const TrainSpec& sp = specs[s];
    auto& tr_ptr = trainers[t];
    if (!tr_ptr) tr_ptr = std::make_unique<TapTrainer>(m_flows[t], m_cfg.train, m_device);
    TapTrainer& tr = *tr_ptr;
    const PatchBank& bank = *m_banks[t];
    auto src = m_episodes(sp.images, sp.weights, m_cfg.train.support, m_cfg.train.query,
                          mix_seed(m_cfg.seed, sp.tag, t, 1));
    Buffer<float> theta0;
    OptimizerState<float> opt_state;
    int64_t budget = m_cfg.train.budget;
    if (sp.warm && m_cfg.train.warm_start) {
      theta0 = Buffer<float>::from_host(sp.warm->taps[t].theta0, m_device);
      opt_state = sp.warm->taps[t].optimizer;
      budget = std::max<int64_t>(1, std::llround(double(budget) * m_cfg.train.round_budget));
    } else {
      theta0 = tr.init_params(bank, *src);
    }
    const std::string name = fmt::format("{} tap {}/{}", sp.phase, t + 1, T);
    TapTrainStats st = tr.train(
        theta0, bank, *src, budget,
        [&](int64_t a, int64_t b, double l) {
          if (m_opt.progress) m_opt.progress(name, a, b, l);
        },
        &opt_state);
    Buffer<float> theta(tr.n_params(), m_device);
    tr.adapt(theta0, theta, bank, *src, &st);
    losses[j] = st.last_loss;
    flagged[j] = st.flagged_images;
    TrainOutcome& o = out[s];
    o.model.taps[t] = {tr.flow_config(), theta0.to_host(), theta.to_host(), std::move(opt_state)};
    o.maps.grids[t] = {bank.height(), bank.width()};
    o.maps.n_images = int64_t(sp.score.size());
    // On the trainer's stream, ordered after the adaptation that made theta.
    if (!sp.score.empty())
      o.maps.nll[t] = TapScorer(tr.flow_config(), m_device, tr.stream()).score(theta, bank, sp.score);
  };
  run_jobs(n_jobs, job);
  for (size_t s = 0; s < specs.size(); ++s) {
    double sum = 0;
    for (size_t t = 0; t < T; ++t) {
      sum += losses[s * T + t];
      for (int64_t f : flagged[s * T + t]) m_flagged.insert(f);
    }
    out[s].loss = sum / double(T);
  }
  return out;
}

TapMaps DetectorJobs::score(const ModelSet& m, const std::vector<int64_t>& images) {
  const size_t T = m_banks.size();
  TapMaps maps;
  maps.n_images = int64_t(images.size());
  maps.grids.resize(T);
  maps.nll.resize(T);
  run_jobs(T, [&](size_t t, Trainers&) {
    TapScorer scorer(m_flows[t], m_device);
    maps.grids[t] = {m_banks[t]->height(), m_banks[t]->width()};
    auto theta = Buffer<float>::from_host(m.taps[t].theta, m_device);
    maps.nll[t] = scorer.score(theta, *m_banks[t], images);
  });
  return maps;
}

void DetectorJobs::run_jobs(size_t n, const Job& job) {
  // Single-threaded BLAS for every job, on the serial path too and also when fewer jobs than
  // workers are left: OpenBLAS splits a GEMM by its thread count, and the split changes the
  // rounding on some CPUs' kernels (Zen), so only a fixed count of one makes a result
  // independent of the worker count and of the caller's BLAS setting by construction.
  const int blas = openblas_get_num_threads();
  openblas_set_num_threads(1);
  if (m_workers <= 1) {
    try {
      for (size_t j = 0; j < n; ++j) job(j, m_trainers);
    } catch (...) {
      openblas_set_num_threads(blas);
      throw;
    }
    openblas_set_num_threads(blas);
    return;
  }
  const int W = int(std::min<size_t>(size_t(m_workers), n));
  std::atomic<size_t> next{0};
  std::mutex err_mutex;
  std::exception_ptr error;
  std::vector<std::thread> threads;
  for (int w = 0; w < W; ++w)
    threads.emplace_back([&] {
      Trainers trainers;  // per worker: not shared
      for (;;) {
        const size_t j = next.fetch_add(1);
        if (j >= n) return;
        try {
          job(j, trainers);
        } catch (...) {
          std::lock_guard<std::mutex> lock(err_mutex);
          if (!error) error = std::current_exception();
          next = n;  // stop handing out work
        }
      }
    });
  for (auto& th : threads) th.join();
  openblas_set_num_threads(blas);
  if (error) std::rethrow_exception(error);
}

}  // namespace mirad
