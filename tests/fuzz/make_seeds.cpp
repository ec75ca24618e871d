// Writes the seed inputs that mirad's own writers produce (contamination manifests, model
// folders, refinement checkpoints) into <corpus>/{manifest,model,checkpoint}/, a few valid and a
// few near-valid each. Run by tests/fuzz/make_corpus.py; usage: make_fuzz_seeds <corpus dir>.
#include <nlohmann/json.hpp>
#include <cstdio>
#include <string>

#include "engine/io/file_io.h"
#include "engine/io/sha256.h"
#include "fixtures.h"
#include "fuzz_util.h"
#include "host/contamination.h"

using namespace mirad;
using namespace mirad::fuzz;

namespace {

std::string read_text(const fs::path& p) {
  const auto b = read_file_bytes(p);
  return std::string(b.begin(), b.end());
}

std::string sha256_hex_of(const std::string& bytes) {
  return sha256_hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

void seed(const fs::path& dir, const std::string& name, const std::string& bytes) {
  fs::create_directories(dir);
  write_file(dir / name, bytes);
}

// `text` with the first `from` replaced by `to` (a near-valid variant); aborts if absent, so a
// change in the writers' output cannot silently turn a variant into a copy.
std::string edit(const std::string& text, const std::string& from, const std::string& to) {
  const auto at = text.find(from);
  require(at != std::string::npos, "make_seeds: text to edit not found");
  return text.substr(0, at) + to + text.substr(at + from.size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_fuzz_seeds <corpus dir>\n");
    return 2;
  }
  const fs::path corpus = argv[1];
  const fs::path& tmp = setup();
  const std::string sep(kPartSeparator);

  // Manifests of the fixture split, as `mirad contaminate` writes them.
  const Dataset clean = fixture_dataset("/nonexistent/mirad-fuzz/wood");
  struct Draw {
    const char* name;
    ContaminationOptions o;
  };
  ContaminationOptions by_count;
  by_count.count = 2, by_count.seed = 7, by_count.overlap = true;
  const Draw draws[] = {{"ratio_0.3", {0.3, std::nullopt, 1, false}},
                        {"ratio_0", {0.0, std::nullopt, 0, false}},
                        {"count_2_overlap", by_count}};
  for (const auto& d : draws) {
    write_manifest(tmp / "m.json", contaminate(clean, d.o).manifest);
    const std::string text = read_text(tmp / "m.json");
    seed(corpus / "manifest", std::string(d.name) + ".json", text);
    if (std::string(d.name) == "ratio_0.3") {
      seed(corpus / "manifest", "near_edited_seed.json", edit(text, "\"seed\": 1", "\"seed\": 2"));
      seed(corpus / "manifest", "near_negative_seed.json",
           edit(text, "\"seed\": 1", "\"seed\": -1"));
      seed(corpus / "manifest", "near_moved_count.json",
           edit(text, "\"moved\": 3", "\"moved\": 18446744073709551615"));
    }
  }

  // A model folder: config.json alone (the target adds the fixture's flow file), and
  // config.json + flow.safetensors; the digest is the token the target replaces.
  save_detector(tmp / "model", tiny_model());
  const std::string flow = read_text(tmp / "model/flow.safetensors");
  const std::string sha = sha256_hex_of(flow);
  std::string config = read_text(tmp / "model/config.json");
  config = edit(config, sha, kShaToken);
  seed(corpus / "model", "config.json", config);
  seed(corpus / "model", "config_and_flow", config + sep + flow);
  seed(corpus / "model", "near_schema_2.json",
       edit(config, "\"schema_version\": 1", "\"schema_version\": 2"));
  seed(corpus / "model", "real_sha.json", edit(config, kShaToken, sha));
  seed(corpus / "model", "near_wrong_sha.json", edit(config, kShaToken, std::string(64, '0')));
  seed(corpus / "model", "near_truncated_flow", config + sep + flow.substr(0, flow.size() / 2));

  // A refinement checkpoint, the same way.
  save_refine_checkpoint(tmp / "ckpt", tiny_checkpoint());
  std::string ckpt = read_text(tmp / "ckpt/checkpoint.json");
  // The tensors file of the generation checkpoint.json names (checkpoint.<hash>.safetensors).
  const std::string tensors =
      read_text(tmp / "ckpt" / nlohmann::json::parse(ckpt).at("tensors_file").get<std::string>());
  ckpt = edit(ckpt, sha256_hex_of(tensors), kShaToken);
  seed(corpus / "checkpoint", "checkpoint.json", ckpt);
  seed(corpus / "checkpoint", "checkpoint_and_tensors", ckpt + sep + tensors);
  seed(corpus / "checkpoint", "near_version_2.json",
       edit(ckpt, "\"version\":1", "\"version\":2"));
  seed(corpus / "checkpoint", "near_no_rounds.json", edit(ckpt, "\"rounds\":[", "\"rounds\":[1,"));
  return 0;
}
