// Round summaries and their JSON.
#include "engine/detector/round_summary.h"

#include <cmath>

#include "core/error.h"
#include "engine/io/json_number.h"

namespace mirad {

RoundSummary summarize_round(const RoundRecord& rec) {
  RoundSummary r;
  r.round = rec.round;
  r.scored = int64_t(rec.scored.size());
  r.tau = rec.tau;
  r.rule = rec.rule_detail;
  r.rejected = int64_t(rec.rejected.size());
  r.nonfinite = rec.nonfinite;
  r.min_keep_reached = rec.min_keep_reached;
  r.train_loss = rec.train_loss;
  r.seconds = rec.seconds;
  return r;
}

std::vector<RoundSummary> summarize_rounds(const std::vector<RoundRecord>& records) {
  std::vector<RoundSummary> out;
  for (const auto& rec : records) out.push_back(summarize_round(rec));
  return out;
}

nlohmann::json to_json(const RoundSummary& r) {
  // train_loss as a plain number: a NaN loss has always been written by dump() as null.
  return {{"round", r.round},
          {"scored", r.scored},
          {"tau", json_number(r.tau)},
          {"rule", r.rule},
          {"rejected", r.rejected},
          {"nonfinite", r.nonfinite},
          {"min_keep_reached", r.min_keep_reached},
          {"train_loss", r.train_loss},
          {"seconds", r.seconds}};
}

nlohmann::json to_json(const std::vector<RoundSummary>& rounds) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : rounds) out.push_back(to_json(r));
  return out;
}

namespace {

double number_or_nan(const nlohmann::json& v) { return v.is_null() ? NAN : v.get<double>(); }

}  // namespace

RoundSummary round_summary_from_json(const nlohmann::json& j, const std::string& what) {
  try {
    RoundSummary r;
    r.round = j.at("round").get<int>();
    r.scored = j.at("scored").get<int64_t>();
    r.tau = number_or_nan(j.at("tau"));
    r.rule = j.at("rule").get<std::string>();
    r.rejected = j.at("rejected").get<int64_t>();
    r.nonfinite = j.at("nonfinite").get<int64_t>();
    r.min_keep_reached = j.at("min_keep_reached").get<bool>();
    r.train_loss = number_or_nan(j.at("train_loss"));
    r.seconds = number_or_nan(j.at("seconds"));
    return r;
  } catch (const nlohmann::json::exception& e) {
    throw InputError(fmt::format("{}: malformed round entry ({})", what, e.what()));
  }
}

}  // namespace mirad
