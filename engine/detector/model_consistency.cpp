// check_model_consistency: what training writes twice must agree. The tap ops themselves are
// checked against the graph at predict time (Predictor::predict), where the graph is known.
#include "engine/detector/model_consistency.h"

#include <charconv>

#include "core/error.h"
#include "engine/detector/refinement.h"

namespace mirad {

namespace {

// The feature extractor's rule: a tap is an op index when the whole text is a number.
bool tap_index(const std::string& tap, int& op) {
  const auto [end, ec] = std::from_chars(tap.data(), tap.data() + tap.size(), op);
  return !tap.empty() && ec == std::errc() && end == tap.data() + tap.size();
}

}  // namespace

void check_model_consistency(const DetectorModel& m, const std::string& where) {
  // Predict extracts features as config.features says; backbone.smooth says how the training
  // features were made.
  CHECK_INPUT(m.config.features.smooth == m.backbone.smooth,
              "model: {}: config.features.smooth is {} but backbone.smooth is {}: the file was "
              "edited (scores would come from other features than the model's)",
              where, m.config.features.smooth, m.backbone.smooth);
  const auto& names = m.config.features.taps;
  CHECK_INPUT(names.size() == m.taps.size(),
              "model: {}: config.features.taps names {} taps but taps holds {}", where,
              names.size(), m.taps.size());
  for (size_t t = 0; t < m.taps.size(); ++t) {
    const TapModel& tm = m.taps[t];
    int op = 0;
    const bool numeric = tap_index(names[t], op);
    const std::string name = numeric ? "op" + names[t] : names[t];
    CHECK_INPUT(tm.name == name,
                "model: {}: taps[{}] is named '{}' but config.features.taps[{}] is '{}'", where,
                t, tm.name, t, names[t]);
    CHECK_INPUT(!numeric || tm.op == op, "model: {}: taps[{}].op is {} but the tap is op {}",
                where, t, tm.op, op);
    // Every field of a tap's flow follows from config.flow, the seed and the channel count;
    // the banks' positional encoding at predict time uses config.flow.cond_dim.
    const FlowConfig want = tap_flow_config(m.config, tm.channels, int64_t(t));
    CHECK_INPUT(tm.params.flow.to_json() == want.to_json(),
                "model: {}: taps[{}].flow is not the flow config.flow gives for {} channels "
                "({} in the tap, {} from the config)",
                where, t, tm.channels, tm.params.flow.to_json().dump(), want.to_json().dump());
  }
}

}  // namespace mirad
