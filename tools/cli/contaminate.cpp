// `mirad contaminate DATASET --ratio R --seed S --manifest m.json`: draws int(R * |train|)
// defect images from the test split into training (SoftPatch's protocol), writes the manifest
// of what moved, and prints the resulting split. Nothing in the dataset is moved or modified;
// the manifest alone defines the contaminated split, and `--check m.json` rebuilds it.
#include "tools/cli/contaminate.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "host/contamination.h"
#include "host/dataset.h"
#include "host/thread_pool.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/subcommand.h"

namespace mirad::cli {

namespace {

struct Options {
  std::string root, layout = "mvtec", manifest, check;
  double ratio = 0.1;
  int64_t count = -1;
  uint64_t seed = 0;
  bool overlap = false, validate = false, json = false;
};

nlohmann::json summary(const Dataset& d) {
  return {{"train", d.train.size()},
          {"train_defect", d.count(d.train, Label::defect)},
          {"test", d.test.size()},
          {"test_defect", d.count(d.test, Label::defect)}};
}

// Every path that goes into JSON output must be UTF-8; checked before anything is written.
void require_utf8_items(const std::vector<Item>& items) {
  for (const Item& it : items) {
    require_utf8_path(it.path, "contaminate");
    require_utf8_path(it.mask_path, "contaminate");
  }
}

// An existing --manifest file is replaced only when it is one of ours: a model's config.json
// or any other JSON there is a person's file, not a manifest to regenerate.
void refuse_replacing_other_files(const std::filesystem::path& manifest) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(manifest, ec))) return;
  bool ours = false;
  try {
    const auto j = read_json_file(manifest, uint64_t(64) << 20);
    ours = j.is_object() && j.value("schema", "") == "mirad.contamination";
  } catch (const std::exception&) {
  }
  CHECK_INPUT(ours, "--manifest {}: exists and is not a contamination manifest (no \"schema\": "
              "\"mirad.contamination\"); refusing to replace it: choose another file name",
              printable(manifest.string()));
}

int run(const Options& o) {
  if (!o.manifest.empty()) {
    check_output(o.manifest, {o.root});
    refuse_replacing_other_files(o.manifest);
    require_utf8_path(o.manifest, "--manifest");
  }
  ThreadPool pool;
  const Dataset clean = load_dataset(o.layout, o.root, &pool);
  if (!o.manifest.empty() || o.json) require_utf8_path(clean.root, "contaminate");
  if (!o.manifest.empty()) {
    // A list layout's items can live anywhere: protect every file the dataset names.
    std::vector<std::filesystem::path> files{clean.root};
    for (const auto* split : {&clean.train, &clean.test})
      for (const Item& it : *split) {
        files.push_back(it.path);
        if (!it.mask_path.empty()) files.push_back(it.mask_path);
      }
    refuse_overwriting_inputs(o.manifest, files);
  }
  if (o.validate) clean.validate(&pool);
  Dataset result;
  ContaminationManifest manifest;
  if (!o.check.empty()) {
    manifest = read_manifest(o.check);
    // Re-drawn from the manifest's seed and compared with it, not just re-applied.
    result = check_manifest(clean, manifest).dataset;
    if (manifest.root.lexically_normal() != clean.root.lexically_normal())
      std::fprintf(stderr, "mirad: note: %s was made from the dataset at %s\n", o.check.c_str(),
                   printable(manifest.root.string()).c_str());
  } else {
    ContaminationOptions co;
    co.ratio = o.ratio;
    if (o.count >= 0) co.count = size_t(o.count);
    co.seed = o.seed;
    co.overlap = o.overlap;
    auto c = contaminate(clean, co);
    result = std::move(c.dataset);
    manifest = std::move(c.manifest);
    if (!o.manifest.empty() || o.json) require_utf8_items(manifest.moved);
    if (!o.manifest.empty()) write_manifest(o.manifest, manifest);
  }
  nlohmann::json moved = nlohmann::json::array();
  for (const Item& it : manifest.moved)
    moved.push_back({{"path", it.path.string()}, {"defect_type", it.defect_type}});
  if (o.json) {
    nlohmann::json out = {{"command", "contaminate"}, {"layout", clean.layout},
                          {"root", clean.root.string()}, {"seed", manifest.seed},
                          {"ratio", manifest.ratio}, {"overlap", manifest.overlap},
                          {"clean", summary(clean)}, {"contaminated", summary(result)},
                          {"moved", moved}};
    if (!o.manifest.empty()) out["manifest"] = o.manifest;
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  // Training defects are counted, not assumed zero: KSDD2 labels come from the masks, and its
  // training split holds defective images of its own.
  std::printf(
      "%s (%s): train %zu images (%zu defective) -> %zu images (%zu defective, %.1f%%); "
      "test %zu -> %zu%s\n",
      clean.root.string().c_str(), clean.layout.c_str(), clean.train.size(),
      clean.count(clean.train, Label::defect), result.train.size(),
      result.count(result.train, Label::defect),
      100.0 * double(result.count(result.train, Label::defect)) /
          double(std::max<size_t>(1, result.train.size())),
      clean.test.size(), result.test.size(), manifest.overlap ? " (overlap kept)" : "");
  if (!o.manifest.empty()) std::printf("manifest: %s\n", o.manifest.c_str());
  if (!o.check.empty())
    std::printf("manifest %s reproduces the split (re-drawn from seed %llu)\n", o.check.c_str(),
                static_cast<unsigned long long>(manifest.seed));
  return 0;
}

}  // namespace

void add_contaminate_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<Options>(
      app, "contaminate",
      "Add test-split defect images to training (SoftPatch protocol) and write "
      "a manifest; the dataset itself is never modified",
      "", rc, run);
  cmd->add_option("dataset", o->root, "dataset root (or list file for --layout list)")
      ->required()
      ->check(NonEmpty());
  cmd->add_option("--layout", o->layout, "mvtec, ksdd2, folder or list")
      ->check(CLI::IsMember({"mvtec", "ksdd2", "folder", "list"}))->capture_default_str();
  auto* ratio =
      cmd->add_option("--ratio", o->ratio, "contamination ratio r: int(r * |train|) defect images")
          ->check(FiniteRange(0.0, 10.0))
          ->capture_default_str();
  auto* count = cmd->add_option("--count", o->count,
                                "an explicit number of defect images (overrides --ratio)")
                    ->check(IntegerRange(0, int64_t(1) << 40));
  auto* seed =
      cmd->add_option("--seed", o->seed, "random seed")->check(Unsigned64())->capture_default_str();
  auto* overlap =
      cmd->add_flag("--overlap", o->overlap, "keep the moved images in the test split too");
  auto* manifest =
      cmd->add_option("--manifest", o->manifest, "write the manifest JSON here (atomically)")
          ->check(NonEmpty());
  // --check reads a manifest: the drawing options would be silently ignored, so refuse them.
  cmd->add_option("--check", o->check,
                  "re-draw the split from this manifest's seed and check it matches the manifest")
      ->check(NonEmpty())
      ->excludes(ratio)
      ->excludes(count)
      ->excludes(seed)
      ->excludes(overlap)
      ->excludes(manifest);
  cmd->add_flag("--validate", o->validate, "read every image and mask header first");
  cmd->add_flag("--json", o->json, "machine-readable JSON on stdout");
}

}  // namespace mirad::cli
