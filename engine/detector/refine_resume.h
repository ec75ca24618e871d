// The check a resumed refinement makes of its checkpoint against its own run: everything the
// rounds recorded must follow from the pool, the review and the rounds before, and the models
// must be this run's flows. A checkpoint.json edited to loop_done/final_ready = true after
// round 4 (issue 13, finding 1) used to skip the final training and crash on an empty model;
// with edited indices or flags (finding 14) it gave another model, exit 0.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/flow/flow_config.h"
#include "engine/detector/refinement.h"
#include "engine/detector/scoring.h"

namespace mirad {

struct ResumeFrame {
  int64_t n_images = 0;               // bank images
  std::vector<int64_t> pool;          // ascending: the images refinement works on
  std::vector<Rejection> reviewed;    // round-0 rejections (a person's review), ascending
  int folds = 1;                      // fold models per round (1 without cross-fit)
  bool cross = false, soft = false, baseline = false;
  int max_rounds = 0;
  std::vector<FlowConfig> flows;      // per tap: what this run trains
  std::vector<Grid> grids;            // per tap: the banks' grids
};

// InputError naming the first contradiction; returns when `c` is a state this run can reach.
void check_resume_state(const RefineCheckpoint& c, const ResumeFrame& frame);

}  // namespace mirad
