// libFuzzer target: detector config JSON, as `--config` and models read it
// (DetectorConfig::from_json on parse_json_bounded). An accepted config must read back from its
// own to_json() to the same JSON, and its derived quantities must be computable.
#include <optional>

#include "engine/config/detector_config.h"
#include "engine/io/json_io.h"
#include "fuzz_util.h"

using namespace mirad;
using namespace mirad::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  setup();
  std::optional<DetectorConfig> cfg;
  expect_only_input_errors([&] {
    cfg = DetectorConfig::from_json(parse_json_bounded(as_text(data, size), "fuzz-config.json"));
  });
  if (!cfg) return 0;
  // Outside the guard: an InputError here (what we wrote, we refuse) is a finding.
  const nlohmann::json j = cfg->to_json();
  require(DetectorConfig::from_json(j).to_json() == j, "config JSON round trip changed it");
  // The derived quantities of any accepted config (UBSan checks their arithmetic).
  (void)cfg->evals_per_step();
  (void)cfg->rule_k();
  return 0;
}
