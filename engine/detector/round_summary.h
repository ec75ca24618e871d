// What a refinement round is reported as (in a model's config.json, clean.json and the --json
// summaries of train and clean): counts, the threshold and its rule, the training loss.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/detector/refinement.h"

namespace mirad {

struct RoundSummary {
  int round = 0;
  int64_t scored = 0;
  double tau = 0;  // NaN when the round's scores gave none (written as null)
  std::string rule;
  int64_t rejected = 0, nonfinite = 0;
  bool min_keep_reached = false;
  double train_loss = 0, seconds = 0;
};

RoundSummary summarize_round(const RoundRecord& record);
std::vector<RoundSummary> summarize_rounds(const std::vector<RoundRecord>& records);

nlohmann::json to_json(const RoundSummary& r);
nlohmann::json to_json(const std::vector<RoundSummary>& rounds);
// InputError naming `what` for a malformed entry.
RoundSummary round_summary_from_json(const nlohmann::json& j, const std::string& what);

}  // namespace mirad
