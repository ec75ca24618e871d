// `mirad demo`: the engine's core loop on a built-in synthetic feature set. Normal vectors lie
// near a curved low-dimensional manifold; a contaminating fraction comes from a shifted one.
// Rounds of (train flow -> score -> tau = Q3 + k*IQR -> reject) clean the training set, as
// the method's iterative refinement does on CNN features.
#include "tools/cli/demo.h"

#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/flow.h"
#include "engine/optimizer.h"
#include "engine/quantiles.h"
#include "tools/cli/progress.h"

namespace mirad::cli {

namespace {

struct Sample {
  std::vector<float> x;
  std::vector<uint8_t> contaminated;
};

// Normal: x = A*tanh(B*l) + 0.05*noise with a 3-D latent l. Contaminant: a normal vector moved
// off the manifold by 0.4 in a random direction: a few noise-sigmas, so it overlaps the normal
// data in every single coordinate and only a model of the joint density separates them.
Sample make_data(int64_t n, int64_t dim, double ratio, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::vector<float> A(dim * 3), B(9);
  std::mt19937_64 map_rng(12345);  // the manifold itself is fixed, not seeded per run
  for (auto& a : A) a = std::normal_distribution<float>()(map_rng);
  for (auto& b : B) b = std::normal_distribution<float>()(map_rng);
  Sample s;
  s.x.resize(n * dim);
  s.contaminated.resize(n);
  const int64_t n_bad = std::llround(ratio * n);
  for (int64_t i = 0; i < n; ++i) {
    const bool bad = i < n_bad;
    float l[3] = {nd(rng), nd(rng), nd(rng)};
    float h[3];
    for (int r = 0; r < 3; ++r)
      h[r] = std::tanh(B[r * 3] * l[0] + B[r * 3 + 1] * l[1] + B[r * 3 + 2] * l[2]);
    for (int64_t j = 0; j < dim; ++j)
      s.x[i * dim + j] = A[j * 3] * h[0] + A[j * 3 + 1] * h[1] + A[j * 3 + 2] * h[2] +
                         0.05f * nd(rng);
    if (bad) {
      std::vector<float> dir(dim);
      float norm = 0;
      for (auto& d : dir) d = nd(rng), norm += d * d;
      for (int64_t j = 0; j < dim; ++j) s.x[i * dim + j] += 0.4f * dir[j] / std::sqrt(norm);
    }
    s.contaminated[i] = bad;
  }
  return s;
}

// Area under the ROC curve of scores against labels (ties count one half), by ranks.
double auroc(const std::vector<float>& score, const std::vector<uint8_t>& label) {
  std::vector<int64_t> idx(score.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return score[a] < score[b]; });
  double rank_sum = 0, n_pos = 0;
  for (size_t i = 0; i < idx.size();) {
    size_t j = i;
    while (j < idx.size() && score[idx[j]] == score[idx[i]]) ++j;
    const double mid = 0.5 * (i + j - 1) + 1;
    for (size_t k = i; k < j; ++k)
      if (label[idx[k]]) rank_sum += mid, n_pos += 1;
    i = j;
  }
  const double n_neg = score.size() - n_pos;
  if (n_pos == 0 || n_neg == 0) return NAN;
  return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg);
}

}  // namespace

int run_demo(const DemoOptions& opt) {
  const Device dev = parse_device(opt.device);
  const Sample data = make_data(opt.n_samples, opt.dim, opt.contamination, opt.seed);
  std::vector<int64_t> kept(opt.n_samples);
  std::iota(kept.begin(), kept.end(), 0);
  FlowConfig cfg;
  cfg.dim = opt.dim, cfg.cond_dim = 0, cfg.n_blocks = 8, cfg.hidden = 4 * opt.dim;
  cfg.seed = opt.seed;
  CouplingFlow<float> flow(cfg, dev);
  auto all_x = Buffer<float>::from_host(data.x, dev);
  MatrixView<const float> all_view(all_x.data(), opt.n_samples, opt.dim, dev);
  nlohmann::json rounds = nlohmann::json::array();
  if (!opt.json)
    std::printf("mirad demo: %lld synthetic %lld-D feature vectors, %.0f%% contaminated, on %s\n",
                (long long)opt.n_samples, (long long)opt.dim, 100 * opt.contamination,
                device_name(dev));
  double threshold = 0;
  for (int round = 1; round <= opt.max_rounds; ++round) {
    // Train a fresh flow on the retained vectors (plain maximum likelihood, full batch).
    std::vector<float> kept_x(kept.size() * opt.dim);
    for (size_t i = 0; i < kept.size(); ++i)
      std::copy_n(&data.x[kept[i] * opt.dim], opt.dim, &kept_x[i * opt.dim]);
    auto xb = Buffer<float>::from_host(kept_x, dev);
    MatrixView<const float> xv(xb.data(), int64_t(kept.size()), opt.dim, dev);
    auto params = flow.init_params();
    flow.init_actnorm(params, xv, {});
    auto adam = make_optimizer<float>({{"type", "adam"}, {"lr", 2e-3}}, flow.n_params(), dev);
    Buffer<float> grad(flow.n_params(), dev);
    Progress bar(fmt::format("round {} training", round), opt.steps, !opt.json);
    double loss = 0;
    for (int64_t step = 0; step < opt.steps; ++step) {
      loss = flow.forward(params, xv, {});
      flow.backward(params, xv, {}, grad);
      adam->step(params.data(), grad.data(), flow.n_params());
      bar.update(step + 1, fmt::format("nll {:.3f}", loss));
    }
    // Score every vector; the threshold comes from the retained ones only.
    std::vector<float> nll_all, nll_kept;
    flow.forward(params, all_view, {}, {}, &nll_all);
    for (int64_t i : kept) nll_kept.push_back(nll_all[i]);
    const QuartileStats q = quartiles_cpu(nll_kept.data(), int64_t(nll_kept.size()));
    threshold = q.threshold(opt.iqr_k);
    std::vector<int64_t> next;
    int64_t rejected = 0, rejected_bad = 0;
    for (int64_t i : kept) {
      if (nll_all[i] > threshold) {
        ++rejected;
        rejected_bad += data.contaminated[i];
      } else {
        next.push_back(i);
      }
    }
    // Rejecting past min_keep would leave too little to learn from: the round is then
    // reported but not applied, and the retained set stays as it was.
    const bool applied = !(double(next.size()) < opt.min_keep * opt.n_samples);
    const std::vector<int64_t>& retained = applied ? next : kept;
    int64_t bad_left = 0;
    for (int64_t i : retained) bad_left += data.contaminated[i];
    const double score_auroc = auroc(nll_all, data.contaminated);
    rounds.push_back({{"round", round},
                      {"train_nll", loss},
                      {"threshold", threshold},
                      {"rejected", rejected},
                      {"rejected_contaminated", rejected_bad},
                      {"applied", applied},
                      {"retained", retained.size()},
                      {"contaminated_left", bad_left},
                      {"auroc", score_auroc}});
    if (!opt.json)
      std::printf("round %d: train NLL %.3f, tau = Q3 + %.1f*IQR = %.3f, rejected %lld "
                  "(%lld contaminated), %lld contaminated left of %zu retained, AUROC %.4f\n",
                  round, loss, opt.iqr_k, threshold, (long long)rejected,
                  (long long)rejected_bad, (long long)bad_left, retained.size(), score_auroc);
    if (!applied && !opt.json)
      std::printf("round %d not applied: it would keep fewer than %.0f%% of the vectors\n",
                  round, 100 * opt.min_keep);
    const bool stop = rejected == 0 || !applied;
    if (applied) kept = std::move(next);
    if (stop) break;
  }
  if (opt.json) {
    nlohmann::json out = {{"command", "demo"},
                          {"device", device_name(dev)},
                          {"n_samples", opt.n_samples},
                          {"dim", opt.dim},
                          {"contamination", opt.contamination},
                          {"rounds", rounds},
                          {"final_threshold", threshold}};
    std::printf("%s\n", out.dump(2).c_str());
  }
  return 0;
}

}  // namespace mirad::cli
