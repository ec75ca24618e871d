// libFuzzer target: model folders (load_detector, and check_model_output, which reads
// config.json to tell a mirad model from anything else). The input is config.json, optionally
// followed by kPartSeparator and flow.safetensors; without one, the flow file of the fixture
// model is used. kShaToken in the config stands for the flow file's real sha256, so fuzzed
// configs get past the digest check. A model that loads must save and load again.
#include <optional>

#include "engine/io/file_io.h"
#include "engine/io/sha256.h"
#include "fixtures.h"
#include "fuzz_util.h"

using namespace mirad;
using namespace mirad::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  static const std::vector<uint8_t> fixed_flow = [&] {
    const fs::path m = dir / "fixture-model";
    save_detector(m, tiny_model());
    return read_file_bytes(m / "flow.safetensors");
  }();

  const Parts parts = split_parts(as_text(data, size));
  const std::string_view flow =
      parts.has_second ? parts.second
                       : as_text(fixed_flow.data(), fixed_flow.size());
  const std::string sha =
      sha256_hex({reinterpret_cast<const uint8_t*>(flow.data()), flow.size()});
  const fs::path model = dir / "model";
  reset_dir(model);
  write_file(model / "config.json", replace_all(parts.first, kShaToken, sha));
  write_file(model / "flow.safetensors", flow);

  expect_only_input_errors([&] { check_model_output(model); });
  std::optional<DetectorModel> m;
  expect_only_input_errors([&] { m = load_detector(model); });
  if (!m) return 0;

  const fs::path again = dir / "again";
  std::error_code ec;
  fs::remove_all(again, ec);
  bool saved = false;
  expect_only_input_errors([&] {
    save_detector(again, *m);
    saved = true;
  });
  if (!saved) return 0;
  const DetectorModel back = load_detector(again);
  require(back.config.to_json() == m->config.to_json() && back.taps.size() == m->taps.size() &&
              back.threshold == m->threshold && back.retained == m->retained,
          "save_detector -> load_detector changed a loaded model");
  return 0;
}
