// Refinement driver: rounds, folds, warm starts, rejection, the shipped detector's statistics.
#include "engine/detector/refinement.h"

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <set>

#include "core/error.h"
#include "core/nvtx.h"
#include "kernels/quantiles.h"
#include "engine/detector/refine_resume.h"
#include "engine/detector/rejection.h"
#include "engine/io/sha256.h"
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

namespace {

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c) {
  uint64_t z = seed ^ (a * 0x9e3779b97f4a7c15ULL) ^ (b * 0xc2b2ae3d27d4eb4fULL) ^
               (c * 0x165667b19e3779f9ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The maps of a subset of the scored images (positions into `maps`).
TapMaps subset(const TapMaps& maps, const std::vector<size_t>& pos) {
  TapMaps out;
  out.grids = maps.grids;
  out.n_images = int64_t(pos.size());
  for (size_t t = 0; t < maps.nll.size(); ++t) {
    const int64_t hw = maps.grids[t].size();
    std::vector<float> v;
    v.reserve(pos.size() * hw);
    for (size_t p : pos)
      v.insert(v.end(), maps.nll[t].begin() + p * hw, maps.nll[t].begin() + (p + 1) * hw);
    out.nll.push_back(std::move(v));
  }
  return out;
}

// One detector to train (then score `score` with), as the refinement rounds need them.
struct TrainSpec {
  std::vector<int64_t> images;
  std::vector<double> weights;      // soft mode, else empty
  const ModelSet* warm = nullptr;   // warm start (theta_0), or a fresh initialisation
  uint64_t tag = 0;                 // seeds the episodes
  std::string phase;                // for progress
  std::vector<int64_t> score;       // images to score with the trained detector
};

struct TrainOutcome {
  ModelSet model;
  TapMaps maps;
  double loss = 0;
};

// Trains and scores detectors: every (detector, tap) pair is an independent job. On the CPU
// with a budget of W > 1 threads, W workers run jobs side by side, each with single-threaded
// BLAS: the flows' GEMMs are too small for two BLAS threads to pay, and a job's result depends
// only on its own inputs and seed, never on which worker ran it or when.
class Driver {
 public:
  Driver(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
         const EpisodeSourceFactory& episodes, Device device, const RefineOptions& opt)
      : m_banks(banks), m_cfg(cfg), m_episodes(episodes), m_device(device), m_opt(opt) {
    for (size_t t = 0; t < banks.size(); ++t)
      m_flows.push_back(tap_flow_config(cfg, banks[t]->channels(), int64_t(t)));
    m_workers = device == Device::cpu ? std::max(1, opt.workers) : 1;
  }

  std::vector<TrainOutcome> run(const std::vector<TrainSpec>& specs) {
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
    auto job = [&](size_t j, std::map<size_t, std::unique_ptr<TapTrainer>>& trainers) {
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
      if (!sp.score.empty()) o.maps.nll[t] = tr.score(theta, bank, sp.score);
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

  TapMaps score(const ModelSet& m, const std::vector<int64_t>& images) {
    const size_t T = m_banks.size();
    TapMaps maps;
    maps.n_images = int64_t(images.size());
    maps.grids.resize(T);
    maps.nll.resize(T);
    run_jobs(T, [&](size_t t, std::map<size_t, std::unique_ptr<TapTrainer>>& trainers) {
      auto& tr = trainers[t];
      if (!tr) tr = std::make_unique<TapTrainer>(m_flows[t], m_cfg.train, m_device);
      maps.grids[t] = {m_banks[t]->height(), m_banks[t]->width()};
      auto theta = Buffer<float>::from_host(m.taps[t].theta, m_device);
      maps.nll[t] = tr->score(theta, *m_banks[t], images);
    });
    return maps;
  }

  const std::set<int64_t>& flagged() const { return m_flagged; }
  void restore_flagged(const std::vector<int64_t>& f) { m_flagged.insert(f.begin(), f.end()); }

 private:
  using Job = std::function<void(size_t, std::map<size_t, std::unique_ptr<TapTrainer>>&)>;

  void run_jobs(size_t n, const Job& job) {
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
        std::map<size_t, std::unique_ptr<TapTrainer>> trainers;  // per worker: not shared
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

  const std::vector<const PatchBank*>& m_banks;
  const DetectorConfig& m_cfg;
  const EpisodeSourceFactory& m_episodes;
  Device m_device;
  const RefineOptions& m_opt;
  std::vector<FlowConfig> m_flows;
  int m_workers = 1;
  std::map<size_t, std::unique_ptr<TapTrainer>> m_trainers;  // the serial path's
  std::set<int64_t> m_flagged;
};

// Merges per-fold maps back into the order of `images`.
TapMaps merge_folds(const std::vector<int64_t>& images, const std::vector<int>& fold_of_image,
                    const std::vector<TapMaps>& fold_maps,
                    const std::vector<std::vector<int64_t>>& fold_images) {
  TapMaps out;
  out.grids = fold_maps.empty() ? std::vector<Grid>{} : fold_maps[0].grids;
  for (const auto& fm : fold_maps)
    if (!fm.grids.empty()) out.grids = fm.grids;
  out.n_images = int64_t(images.size());
  out.nll.resize(out.grids.size());
  std::vector<size_t> next(fold_maps.size(), 0);
  for (int64_t img : images) {
    const int k = fold_of_image[img];
    const size_t p = next[k]++;
    CHECK_THROW(fold_images[k][p] == img);
    for (size_t t = 0; t < out.grids.size(); ++t) {
      const int64_t hw = out.grids[t].size();
      const auto& src = fold_maps[k].nll[t];
      out.nll[t].insert(out.nll[t].end(), src.begin() + p * hw, src.begin() + (p + 1) * hw);
    }
  }
  return out;
}

}  // namespace

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
  CHECK_INPUT(!banks.empty(), "refinement: no feature taps");
  cfg.check_training_budget();
  const int64_t n_all = banks[0]->n_images();
  for (const PatchBank* b : banks)
    CHECK_INPUT(b->n_images() == n_all, "refinement: taps hold {} and {} images", n_all,
                b->n_images());
  const std::set<int64_t> keep(opt.always_keep.begin(), opt.always_keep.end());
  const std::set<int64_t> drop(opt.always_reject.begin(), opt.always_reject.end());
  for (int64_t i : keep) CHECK_INPUT(i >= 0 && i < n_all, "refinement: keep index {} out of range", i);
  for (int64_t i : drop) {
    CHECK_INPUT(i >= 0 && i < n_all, "refinement: reject index {} out of range", i);
    CHECK_INPUT(!keep.count(i), "refinement: image {} is both kept and rejected by review", i);
  }
  std::vector<int64_t> pool;
  std::vector<Rejection> reviewed;
  for (int64_t i = 0; i < n_all; ++i) {
    if (drop.count(i))
      reviewed.push_back({i, 0, std::numeric_limits<double>::quiet_NaN(), 0, 0});
    else
      pool.push_back(i);
  }
  CHECK_INPUT(pool.size() >= 2, "refinement: {} training images left; at least 2 are needed",
              pool.size());
  Driver drv(banks, cfg, episodes, device, opt);
  const bool cross = cfg.refine.scoring == "cross_fit";
  const bool soft = cfg.refine.soft;
  const int K = cross ? int(cfg.refine.folds) : 1;
  // Folds: a seeded permutation of the images dealt round-robin, fixed for every round. Exact
  // duplicates (equal features) form one unit and share a fold.
  std::vector<int> fold_of(n_all, 0);
  std::string identity = cfg.to_json().dump();
  {
    std::map<uint64_t, std::vector<int64_t>> groups;
    std::vector<uint64_t> order;  // first-seen order of the fingerprints
    for (int64_t i = 0; i < n_all; ++i) {
      uint64_t key = 0;
      for (const PatchBank* b : banks) key = key * 0x100000001b3ULL ^ b->image_fingerprint(i);
      identity += fmt::format(" {:x}", key);
      if (!groups.count(key)) order.push_back(key);
      groups[key].push_back(i);
    }
    if (cross) {
      const int64_t G = int64_t(order.size());
      std::vector<int64_t> perm(G);
      for (int64_t g = 0; g < G; ++g) perm[g] = g;
      uint64_t s = mix_seed(cfg.seed, 0xf01d, 0, 0);
      for (int64_t g = G - 1; g > 0; --g) {
        s = mix_seed(s, uint64_t(g), 1, 2);
        std::swap(perm[g], perm[int64_t(s % uint64_t(g + 1))]);
      }
      for (int64_t r = 0; r < G; ++r)
        for (int64_t i : groups[order[perm[r]]]) fold_of[i] = int(r % K);
    }
  }
  for (int64_t i : keep) identity += fmt::format(" k{}", i);
  for (int64_t i : drop) identity += fmt::format(" r{}", i);
  identity += fmt::format(" baseline{}", opt.baseline);
  const int64_t n_min =
      std::max<int64_t>(2, int64_t(std::ceil(cfg.refine.min_keep * double(pool.size()) - 1e-9)));
  const double rule_k = cfg.rule_k();

  // The state that rounds advance, and that checkpoints save.
  RefineCheckpoint st;
  st.run_key = sha256_hex(std::span<const uint8_t>(
      reinterpret_cast<const uint8_t*>(identity.data()), identity.size()));
  if (opt.resume) {
    CHECK_INPUT(opt.resume->run_key == st.run_key,
                "refinement: the checkpoint belongs to another run (other config, images or "
                "review lists); remove it to start over");
    // The run key covers the config and images, not the checkpoint's own state: that must be
    // one this run can reach, or a resumed run continues from an edit (issue 13, 1 and 14).
    ResumeFrame frame;
    frame.n_images = n_all;
    frame.pool = pool;
    frame.reviewed = reviewed;
    frame.folds = K;
    frame.cross = cross, frame.soft = soft, frame.baseline = opt.baseline;
    frame.max_rounds = int(cfg.refine.max_rounds);
    for (size_t t = 0; t < banks.size(); ++t) {
      frame.flows.push_back(tap_flow_config(cfg, banks[t]->channels(), int64_t(t)));
      frame.grids.push_back({banks[t]->height(), banks[t]->width()});
    }
    check_resume_state(*opt.resume, frame);
    st = *opt.resume;
    drv.restore_flagged(st.flagged);
  } else {
    st.retained = pool;
    if (soft) st.weights.assign(pool.size(), 1.0);
    st.prev.resize(K);
    st.has_prev.assign(K, 0);
    st.rejected = reviewed;
    st.stop_reason = cfg.refine.max_rounds == 0 ? "no_rounds" : "max_rounds";
    st.loop_done = cfg.refine.max_rounds == 0;
  }
  std::vector<int64_t>& R = st.retained;  // hard mode: the retained set
  auto weights_for = [&](const std::vector<int64_t>& imgs) {
    std::vector<double> w;
    if (!soft) return w;
    for (int64_t i : imgs)
      w.push_back(st.weights[std::lower_bound(pool.begin(), pool.end(), i) - pool.begin()]);
    return w;
  };
  auto save = [&] {
    if (!opt.checkpoint) return;
    const auto& f = drv.flagged();
    st.flagged.assign(f.begin(), f.end());
    opt.checkpoint(st);
  };

  for (int r = st.rounds_done + 1; !st.loop_done && r <= cfg.refine.max_rounds; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    RoundRecord rec;
    rec.round = r;
    rec.scored = R;
    double loss_sum = 0;
    if (cross) {
      std::vector<TapMaps> fold_maps(K);
      std::vector<std::vector<int64_t>> fold_images(K);
      std::vector<TrainSpec> specs;
      std::vector<int> spec_fold;
      for (int k = 0; k < K; ++k) {
        TrainSpec sp;
        for (int64_t i : R) (fold_of[i] == k ? fold_images[k] : sp.images).push_back(i);
        if (fold_images[k].empty()) continue;
        sp.weights = weights_for(sp.images);
        sp.warm = st.has_prev[k] ? &st.prev[k] : nullptr;
        sp.tag = uint64_t(r) * 1000 + k;
        sp.phase = fmt::format("round {} fold {}/{}", r, k + 1, K);
        sp.score = fold_images[k];
        specs.push_back(std::move(sp));
        spec_fold.push_back(k);
      }
      auto outs = drv.run(specs);
      for (size_t i = 0; i < outs.size(); ++i) {
        const int k = spec_fold[i];
        st.prev[k] = std::move(outs[i].model);
        st.has_prev[k] = 1;
        fold_maps[k] = std::move(outs[i].maps);
        loss_sum += outs[i].loss / double(outs.size());
      }
      st.last_maps = merge_folds(R, fold_of, fold_maps, fold_images);
    } else {
      TrainSpec sp;
      sp.images = R;
      sp.weights = weights_for(R);
      sp.warm = st.has_prev[0] ? &st.prev[0] : nullptr;
      sp.tag = uint64_t(r) * 1000;
      sp.phase = fmt::format("round {}", r);
      sp.score = R;
      auto outs = drv.run({sp});
      st.last_model = std::move(outs[0].model);
      st.prev[0] = st.last_model;
      st.has_prev[0] = 1;
      loss_sum = outs[0].loss;
      st.last_maps = std::move(outs[0].maps);
      if (r == 1 && opt.baseline) {
        st.has_baseline = true;
        st.baseline = st.last_model;
        std::vector<double> s;
        st.baseline_stats = calibrate_scores(st.last_maps, cfg.score, s);
        st.baseline_threshold = decision_threshold(s, cfg.threshold);
      }
    }
    st.last_scored = R;
    rec.train_loss = loss_sum;
    calibrate_scores(st.last_maps, cfg.score, rec.scores);
    std::vector<double> finite;
    for (double s : rec.scores)
      if (std::isfinite(s)) finite.push_back(s);
      else ++rec.nonfinite;
    RejectionThreshold th{std::numeric_limits<double>::infinity(), "every score is non-finite"};
    if (!finite.empty()) th = rejection_threshold(finite, cfg.refine.rule, rule_k);
    rec.tau = th.tau;
    rec.rule_detail = th.detail;
    st.rounds_done = r;

    if (soft) {
      // w = exp(-max(0, s - tau) / IQR): sign-safe for NLL scores, 1 at and below tau.
      const QuartileStats q = finite.empty() ? QuartileStats{}
                                             : quartiles_cpu(finite.data(), int64_t(finite.size()));
      const double iqr = q.iqr > 0 ? q.iqr : 1.0;
      std::vector<int64_t> down;
      for (size_t j = 0; j < R.size(); ++j) {
        const double s = rec.scores[j];
        double w = std::isfinite(s) ? std::exp(-std::max(0.0, s - rec.tau) / iqr) : 0.0;
        if (keep.count(R[j])) w = 1.0;
        st.weights[j] = w;  // R == pool in soft mode
        rec.weights.push_back(w);
        if (w < 1.0) down.push_back(R[j]), rec.rejected.push_back(R[j]);
      }
      rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      st.rounds.push_back(rec);
      const bool same = down == st.last_down;
      st.last_down = down;
      if (same) {
        st.stop_reason = "converged";
        st.final_ready = !cross;
        st.loop_done = true;
      }
      save();
      continue;
    }

    // Hard rejection: non-finite scores first, then everything above tau.
    std::vector<std::pair<double, int64_t>> cand;  // (score, image) with NaN as +Inf
    for (size_t j = 0; j < R.size(); ++j) {
      if (keep.count(R[j])) continue;
      const double s = rec.scores[j];
      if (!std::isfinite(s) || s > rec.tau)
        cand.push_back({std::isnan(s) ? std::numeric_limits<double>::infinity() : s, R[j]});
    }
    std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    const int64_t room = std::max<int64_t>(0, int64_t(R.size()) - n_min);
    if (int64_t(cand.size()) > room) {
      cand.resize(room);
      rec.min_keep_reached = true;
    }
    std::set<int64_t> out;
    for (const auto& [s, img] : cand) {
      out.insert(img);
      rec.rejected.push_back(img);
      st.rejected.push_back({img, r, s, rec.tau, 0.0});
    }
    rec.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    st.rounds.push_back(rec);
    if (out.empty()) {
      st.stop_reason = rec.min_keep_reached ? "min_keep" : "converged";
      st.final_ready = !cross;
      st.loop_done = true;
    } else {
      std::vector<int64_t> next;
      for (int64_t i : R)
        if (!out.count(i)) next.push_back(i);
      R = std::move(next);
      if (rec.min_keep_reached) {
        st.stop_reason = "min_keep";
        st.loop_done = true;
      }
    }
    save();
  }
  st.loop_done = true;

  RefinementResult res;
  res.rounds = st.rounds;
  res.rejected = st.rejected;
  res.stop_reason = st.stop_reason;
  // The shipped detector, trained on the final retained set (soft: all, with the weights).
  if (!st.final_ready) {
    const ModelSet* warm = nullptr;
    for (int k = 0; k < K && !warm; ++k)
      if (st.has_prev[k]) warm = &st.prev[k];
    TrainSpec sp;
    sp.images = R;
    sp.weights = weights_for(R);
    sp.warm = warm;
    sp.tag = 999999;
    sp.phase = "final";
    // The baseline (every image, no rejection) trains alongside when asked for.
    std::vector<TrainSpec> specs{sp};
    if (opt.baseline && !st.has_baseline) {
      TrainSpec b;
      b.images = pool;
      b.tag = 777777;
      b.phase = "baseline";
      b.score = pool;
      specs.push_back(b);
    }
    auto outs = drv.run(specs);
    st.last_model = std::move(outs[0].model);
    if (outs.size() > 1) {
      st.baseline = std::move(outs[1].model);
      std::vector<double> s;
      st.baseline_stats = calibrate_scores(outs[1].maps, cfg.score, s);
      st.baseline_threshold = decision_threshold(s, cfg.threshold);
      st.has_baseline = true;
    }
  }
  res.model = st.last_model;
  res.retained = R;
  // Calibration: in-sample scores of the final model, or the out-of-fold scores of the last
  // round restricted to the images still retained.
  const std::set<int64_t> last_down(st.last_down.begin(), st.last_down.end());
  std::vector<int64_t> calib;
  for (int64_t i : R)
    if (!soft || !last_down.count(i)) calib.push_back(i);
  TapMaps calib_maps;
  if (!cross && !soft && st.final_ready) {
    calib_maps = st.last_maps;  // nothing was rejected after these in-sample maps were made
  } else if (cross && !st.last_scored.empty()) {
    std::vector<size_t> pos;
    for (int64_t i : calib)
      pos.push_back(std::lower_bound(st.last_scored.begin(), st.last_scored.end(), i) -
                    st.last_scored.begin());
    calib_maps = subset(st.last_maps, pos);
  } else {
    calib_maps = drv.score(res.model, calib);
  }
  res.stats = calibrate_scores(calib_maps, cfg.score, res.calibration_scores);
  res.calibration_images = calib;
  res.threshold = decision_threshold(res.calibration_scores, cfg.threshold, &res.threshold_detail);
  if (soft && !res.rounds.empty()) {
    const RoundRecord& last = res.rounds.back();
    for (size_t j = 0; j < last.scored.size(); ++j)
      if (last.weights[j] < 1.0)
        res.rejected.push_back({last.scored[j], last.round, last.scores[j], last.tau, last.weights[j]});
  }
  res.flagged.assign(drv.flagged().begin(), drv.flagged().end());
  if (opt.baseline && !st.has_baseline) {
    TrainSpec b;
    b.images = pool;
    b.tag = 777777;
    b.phase = "baseline";
    b.score = pool;
    auto outs = drv.run({b});
    st.baseline = std::move(outs[0].model);
    std::vector<double> s;
    st.baseline_stats = calibrate_scores(outs[0].maps, cfg.score, s);
    st.baseline_threshold = decision_threshold(s, cfg.threshold);
    st.has_baseline = true;
  }
  res.has_baseline = st.has_baseline;
  res.baseline = st.baseline;
  res.baseline_stats = st.baseline_stats;
  res.baseline_threshold = st.baseline_threshold;
  return res;
}

}  // namespace mirad
