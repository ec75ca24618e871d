// DetectorJobs: trains and scores the detectors refinement needs. Every (detector, tap) pair is
// an independent job; on the CPU with a budget of W > 1 threads, W workers run jobs side by
// side, each with single-threaded BLAS: the flows' GEMMs are too small for two BLAS threads to
// pay, and a job's result depends only on its own inputs and seed, never on which worker ran it
// or when.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "engine/detector/refinement.h"
#include "engine/detector/scoring.h"

namespace mirad {

// One detector to train (then score `score` with), as the refinement rounds need them.
struct TrainSpec {
  std::vector<int64_t> images;
  std::vector<double> weights;      // soft mode, else empty
  const ModelSet* warm = nullptr;   // warm start (theta_0), or a fresh initialisation
  uint64_t tag = 0;                 // seeds the episodes (refine_seeds.h)
  std::string phase;                // for progress
  std::vector<int64_t> score;       // images to score with the trained detector
};

struct TrainOutcome {
  ModelSet model;
  TapMaps maps;
  double loss = 0;  // mean last-step loss over the taps
};

class DetectorJobs {
 public:
  DetectorJobs(const std::vector<const PatchBank*>& banks, const DetectorConfig& cfg,
               const EpisodeSourceFactory& episodes, Device device, const RefineOptions& opt);
  ~DetectorJobs();

  // Trains every spec's detector (InputError for a spec with fewer than 2 images).
  std::vector<TrainOutcome> train(const std::vector<TrainSpec>& specs);
  // Per-tap patch NLLs of `images` under m.
  TapMaps score(const ModelSet& m, const std::vector<int64_t>& images);

  // Images with non-finite training loss, over every job so far.
  const std::set<int64_t>& flagged() const { return m_flagged; }
  void restore_flagged(const std::vector<int64_t>& f) { m_flagged.insert(f.begin(), f.end()); }

 private:
  using Trainers = std::map<size_t, std::unique_ptr<TapTrainer>>;  // per tap, per worker
  using Job = std::function<void(size_t, Trainers&)>;
  void run_jobs(size_t n, const Job& job);

  const std::vector<const PatchBank*>& m_banks;
  const DetectorConfig& m_cfg;
  const EpisodeSourceFactory& m_episodes;
  Device m_device;
  const RefineOptions& m_opt;
  std::vector<FlowConfig> m_flows;
  int m_workers = 1;
  Trainers m_trainers;  // the serial path's
  std::set<int64_t> m_flagged;
};

}  // namespace mirad
