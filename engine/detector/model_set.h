// ModelSet: one detector's flows, per tap theta_0 and the shipped theta.
#pragma once

#include <vector>

#include "engine/flow/flow_config.h"
#include "engine/flow/optimizer.h"

namespace mirad {

// One detector's flows: per tap, theta_0 (the meta-learned initialisation; plain: the trained
// parameters) and theta (the shipped, adapted parameters).
struct TapParams {
  FlowConfig flow;
  std::vector<float> theta0, theta;
  OptimizerState<float> optimizer;  // Adam's state on theta_0, for warm starts (not shipped)
};
struct ModelSet {
  std::vector<TapParams> taps;
};

}  // namespace mirad
