// libFuzzer target: contamination manifests (read_manifest on the fuzzed file), then what
// `contaminate --check` and a manifest-driven run do with one: check_manifest and
// apply_manifest against a fixed dataset split (fixtures.h). A manifest that checks must
// describe a split that round-trips through write_manifest / read_manifest unchanged.
#include <optional>

#include "fixtures.h"
#include "fuzz_util.h"
#include "host/contamination.h"

using namespace mirad;
using namespace mirad::fuzz;

namespace {

bool same_manifest(const ContaminationManifest& a, const ContaminationManifest& b) {
  if (a.moved.size() != b.moved.size()) return false;
  for (std::size_t i = 0; i < a.moved.size(); ++i) {
    const Item &x = a.moved[i], &y = b.moved[i];
    if (x.path.lexically_normal() != y.path.lexically_normal() || x.label != y.label ||
        x.defect_type != y.defect_type ||
        x.mask_path.lexically_normal() != y.mask_path.lexically_normal())
      return false;
  }
  return a.layout == b.layout && a.root == b.root && a.seed == b.seed && a.ratio == b.ratio &&
         a.requested_count == b.requested_count && a.overlap == b.overlap &&
         a.train_before == b.train_before && a.test_before == b.test_before &&
         a.defects_available == b.defects_available && a.train_after == b.train_after &&
         a.test_after == b.test_after;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  const fs::path file = dir / "manifest.json";
  write_file(file, as_text(data, size));
  std::optional<ContaminationManifest> m;
  expect_only_input_errors([&] { m = read_manifest(file); });
  if (!m) return 0;

  // The fixture's root does not exist, so a manifest naming any other missing root still
  // checks (a dataset may move); seeds use this root.
  const Dataset clean = fixture_dataset("/nonexistent/mirad-fuzz/wood");
  expect_only_input_errors([&] { (void)apply_manifest(clean, *m); });
  std::optional<ContaminatedDataset> redo;
  expect_only_input_errors([&] { redo = check_manifest(clean, *m); });
  if (!redo) return 0;
  require(same_manifest(redo->manifest, *m) || m->root != clean.root,
          "check_manifest accepted a manifest that differs from its re-draw");
  const fs::path again = dir / "again.json";
  write_manifest(again, redo->manifest);
  require(same_manifest(read_manifest(again), redo->manifest),
          "write_manifest -> read_manifest changed a re-drawn manifest");
  return 0;
}
