// libFuzzer target: refinement checkpoints (load_refine_checkpoint). The input is
// checkpoint.json, optionally followed by kPartSeparator and checkpoint.safetensors; without
// one, the tensors of the fixture checkpoint are used. kShaToken in the JSON stands for the
// tensors' real sha256. A checkpoint that loads must save and load again to the same files.
#include <optional>

#include "engine/file_io.h"
#include "engine/sha256.h"
#include "fixtures.h"
#include "fuzz_util.h"

using namespace mirad;
using namespace mirad::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  static const std::vector<uint8_t> fixed_tensors = [&] {
    const fs::path c = dir / "fixture-checkpoint";
    save_refine_checkpoint(c, tiny_checkpoint());
    return read_file_bytes(c / "checkpoint.safetensors");
  }();

  const Parts parts = split_parts(as_text(data, size));
  const std::string_view tensors =
      parts.has_second ? parts.second : as_text(fixed_tensors.data(), fixed_tensors.size());
  const std::string sha =
      sha256_hex({reinterpret_cast<const uint8_t*>(tensors.data()), tensors.size()});
  const fs::path ckpt = dir / "checkpoint";
  reset_dir(ckpt);
  write_file(ckpt / "checkpoint.json", replace_all(parts.first, kShaToken, sha));
  write_file(ckpt / "checkpoint.safetensors", tensors);

  std::optional<RefineCheckpoint> c;
  expect_only_input_errors([&] { c = load_refine_checkpoint(ckpt); });
  if (!c) return 0;

  // What was loaded, saved, loads again and saves to the same bytes.
  const fs::path a = dir / "again-a", b = dir / "again-b";
  reset_dir(a);
  reset_dir(b);
  save_refine_checkpoint(a, *c);
  const auto back = load_refine_checkpoint(a);
  require(back.has_value(), "a saved checkpoint is not found again");
  save_refine_checkpoint(b, *back);
  require(read_file_bytes(a / "checkpoint.json") == read_file_bytes(b / "checkpoint.json") &&
              read_file_bytes(a / "checkpoint.safetensors") ==
                  read_file_bytes(b / "checkpoint.safetensors"),
          "save -> load -> save of a checkpoint changed it");
  return 0;
}
