// libFuzzer target: refinement checkpoints (load_refine_checkpoint). The input is
// checkpoint.json, optionally followed by kPartSeparator and checkpoint.safetensors; without
// one, the tensors of the fixture checkpoint are used. kShaToken in the JSON stands for the
// tensors' real sha256. The tensors are written as checkpoint.safetensors (the name a JSON
// without "tensors_file" means) and under the plain file name the JSON gives, if it gives one.
// A checkpoint that loads must save and load again to the same files.
#include <nlohmann/json.hpp>

#include <optional>

#include "engine/io/file_io.h"
#include "engine/io/sha256.h"
#include "fixtures.h"
#include "fuzz_util.h"

using namespace mirad;
using namespace mirad::fuzz;

namespace {

// The tensors file a checkpoint.json names, when it names a plain file in its folder.
std::optional<std::string> named_tensors(std::string_view json_text) {
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_object() || !j.contains("tensors_file") || !j["tensors_file"].is_string())
    return std::nullopt;
  const std::string name = j["tensors_file"].get<std::string>();
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos || name.size() > 200)
    return std::nullopt;
  return name;
}

std::vector<uint8_t> tensors_of(const fs::path& dir) {
  const auto text = read_file_bytes(dir / "checkpoint.json");
  const auto name = named_tensors({reinterpret_cast<const char*>(text.data()), text.size()});
  require(name.has_value(), "a saved checkpoint.json names no tensors file");
  return read_file_bytes(dir / *name);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  static const std::vector<uint8_t> fixed_tensors = [&] {
    const fs::path c = dir / "fixture-checkpoint";
    save_refine_checkpoint(c, tiny_checkpoint());
    return tensors_of(c);
  }();

  const Parts parts = split_parts(as_text(data, size));
  const std::string_view tensors =
      parts.has_second ? parts.second : as_text(fixed_tensors.data(), fixed_tensors.size());
  const std::string sha =
      sha256_hex({reinterpret_cast<const uint8_t*>(tensors.data()), tensors.size()});
  const fs::path ckpt = dir / "checkpoint";
  reset_dir(ckpt);
  const std::string json_text = replace_all(parts.first, kShaToken, sha);
  write_file(ckpt / "checkpoint.json", json_text);
  write_file(ckpt / "checkpoint.safetensors", tensors);
  if (const auto name = named_tensors(json_text); name && *name != "checkpoint.json")
    write_file(ckpt / *name, tensors);

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
              tensors_of(a) == tensors_of(b),
          "save -> load -> save of a checkpoint changed it");
  return 0;
}
