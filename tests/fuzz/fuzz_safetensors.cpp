// libFuzzer target: safetensors files, header and body (parse_safetensors, and load_safetensors
// on the same bytes as a file). A file that loads must survive a round trip through the writer.
#include <cstring>
#include <optional>

#include "engine/io/safetensors.h"
#include "fuzz_util.h"

using namespace mirad;
using namespace mirad::fuzz;

namespace {

bool same_bits(const std::map<std::string, HostTensor>& a,
               const std::map<std::string, HostTensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    const auto it = b.find(name);
    if (it == b.end() || it->second.shape != t.shape || it->second.data.size() != t.data.size())
      return false;
    // Bits, not values: NaN payloads and signed zeros must survive as well.
    if (!t.data.empty() &&
        std::memcmp(it->second.data.data(), t.data.data(), t.data.size() * sizeof(float)) != 0)
      return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const fs::path& dir = setup();
  std::optional<SafeTensors> parsed;
  expect_only_input_errors([&] { parsed = parse_safetensors({data, size}, "fuzz-input"); });

  const fs::path file = dir / "fuzz.safetensors";
  write_file(file, as_text(data, size));
  bool loaded = false;
  expect_only_input_errors([&] {
    const SafeTensors st = load_safetensors(file);
    loaded = true;
    require(parsed && same_bits(st.tensors(), parsed->tensors()) &&
                st.metadata() == parsed->metadata(),
            "load_safetensors and parse_safetensors disagree");
  });
  require(loaded == parsed.has_value(), "load_safetensors and parse_safetensors disagree");
  if (!parsed) return 0;

  // The writer may refuse names the format allows (an empty one); what it writes, the reader
  // must read back to the same tensors and metadata.
  std::vector<uint8_t> again;
  expect_only_input_errors(
      [&] { again = serialize_safetensors(parsed->tensors(), parsed->metadata()); });
  if (again.empty()) return 0;
  const SafeTensors back = parse_safetensors(again, "round-trip");
  require(same_bits(back.tensors(), parsed->tensors()) && back.metadata() == parsed->metadata(),
          "serialize_safetensors -> parse_safetensors is not the identity");
  return 0;
}
