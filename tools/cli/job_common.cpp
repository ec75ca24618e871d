// Shared job options: dataset loading, config assembly, review lists, output-path checks.
#include "tools/cli/job_common.h"

#include <unistd.h>

#include <cstring>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "host/feature_extractor.h"
#include "tools/cli/cli_checks.h"

namespace mirad::cli {

namespace fs = std::filesystem;

void add_data_options(CLI::App* cmd, DataOptions& o, bool required) {
  auto* d = cmd->add_option("--data", o.data, "dataset folder (or list file with --layout list)")
                ->check(NonEmpty());
  if (required) d->required();
  cmd->add_option("--layout", o.layout,
                  "auto, mvtec, ksdd2, folder, list or images (every image under --data)")
      ->check(CLI::IsMember({"auto", "mvtec", "ksdd2", "folder", "list", "images"}))
      ->capture_default_str();
  cmd->add_option("--contamination", o.contamination,
                  "a `mirad contaminate` manifest: its moved test defects join training")
      ->check(NonEmpty());
}

void add_run_options(CLI::App* cmd, RunOptions& o) {
  cmd->add_option("--config", o.config, "config JSON (see README: Formats); unknown keys are errors")
      ->check(NonEmpty());
  cmd->add_option("--set", o.set, "override one config key, e.g. --set train.mode=plain "
                                  "--set refine.rule=mad (repeatable)");
  cmd->add_option("--device", o.device, "cpu or cuda (overrides the config)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  auto* seed = cmd->add_option("--seed", o.seed, "random seed (overrides the config)")
                   ->check(Unsigned64());
  seed->each([&o](const std::string&) { o.seed_given = true; });
  cmd->add_option("--features", o.features,
                  "reuse a `mirad embed` features file of exactly these images (checked)")
      ->check(NonEmpty());
  cmd->add_option("--threads", o.threads,
                  "one thread budget for decoding, oneDNN and OpenBLAS (0 = every core; at "
                  "most 4x the cores)")
      ->check(ThreadCount())->capture_default_str();
  cmd->add_option("--normalize", o.normalize,
                  "input normalisation preset when the backbone's graph has none: imagenet, "
                  "tf_inception, efficientnet_lite, unit")
      ->check(CLI::IsMember({"imagenet", "tf_inception", "efficientnet_lite", "unit"}));
  cmd->add_option("--checkpoint", o.checkpoint,
                  "folder for a checkpoint after every round; rerunning with it resumes (to the "
                  "same result) after a crash or kill; one run at a time holds it (a second is "
                  "refused); removed when the run completes")
      ->check(NonEmpty());
  cmd->add_flag("--strict", o.strict, "an image that cannot be decoded stops the run "
                                      "(default: skipped and reported)");
  cmd->add_flag("--json", o.json, "machine-readable JSON on stdout, no progress line");
}

LoadedData load_data(const DataOptions& o) {
  LoadedData d;
  const fs::path root(o.data);
  std::error_code ec;
  CHECK_INPUT(fs::exists(root, ec), "--data {}: no such file or folder", printable(o.data));
  std::string layout = o.layout;
  if (layout == "auto") {
    if (fs::is_directory(root / "train" / "good", ec))
      layout = "mvtec";
    else if (fs::is_directory(root / "good", ec) || fs::is_directory(root / "train", ec))
      layout = "folder";
    else
      layout = "images";
  }
  if (layout == "images") {
    CHECK_INPUT(fs::is_directory(root, ec), "--data {} is not a folder", printable(o.data));
    d.dataset.layout = "images";
    d.dataset.root = root;
    for (const auto& p : collect_images({root})) d.dataset.train.push_back({p, Label::good, "good", {}});
  } else {
    d.dataset = load_dataset(layout, root);
  }
  d.inputs.push_back(root);
  if (!o.contamination.empty()) {
    d.manifest = read_manifest(o.contamination);
    d.dataset = apply_manifest(d.dataset, *d.manifest);
    d.inputs.push_back(o.contamination);
  }
  for (const auto* split : {&d.dataset.train, &d.dataset.test})
    for (const Item& it : *split) {
      d.inputs.push_back(it.path);
      if (!it.mask_path.empty()) d.inputs.push_back(it.mask_path);
    }
  CHECK_INPUT(!d.dataset.train.empty(), "--data {}: the training set is empty",
              printable(o.data));
  return d;
}

namespace {

// "a.b.c=value": value as JSON when it parses (numbers, true/false, arrays), else a string.
void apply_override(nlohmann::json& cfg, const std::string& text) {
  const auto eq = text.find('=');
  CHECK_INPUT(eq != std::string::npos && eq > 0, "--set {}: expected key.path=value",
              printable(text));
  const std::string key = text.substr(0, eq), raw = text.substr(eq + 1);
  nlohmann::json value;
  try {
    value = parse_json_bounded(raw, "--set " + key);
  } catch (const InputError&) {
    value = raw;
  }
  nlohmann::json* node = &cfg;
  size_t start = 0;
  for (;;) {
    const auto dot = key.find('.', start);
    const std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    CHECK_INPUT(!part.empty(), "--set {}: empty key component", printable(text));
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    if (!node->contains(part) || !(*node)[part].is_object()) (*node)[part] = nlohmann::json::object();
    node = &(*node)[part];
    start = dot + 1;
  }
}

}  // namespace

DetectorConfig load_config(const RunOptions& o) {
  nlohmann::json j = nlohmann::json::object();
  if (!o.config.empty()) j = read_json_file(o.config, uint64_t(16) << 20);
  CHECK_INPUT(j.is_object(), "--config {}: must hold a JSON object", printable(o.config));
  for (const auto& s : o.set) apply_override(j, s);
  if (!o.device.empty()) j["device"] = o.device;
  if (o.seed_given) j["seed"] = o.seed;
  return DetectorConfig::from_json(j);
}

void add_training_options(CLI::App* cmd, DataOptions& data, RunOptions& run, std::string& keep,
                          std::string& reject) {
  add_data_options(cmd, data);
  add_run_options(cmd, run);
  cmd->add_option("--keep", keep, "list file of images a person confirmed as good: never "
                                  "rejected")->check(NonEmpty());
  cmd->add_option("--reject", reject, "list file of images a person confirmed as defective: "
                                      "excluded from the start")->check(NonEmpty());
}

std::vector<fs::path> read_path_list(const fs::path& list) {
  const std::string text = read_file_text(list, uint64_t(64) << 20);
  std::vector<fs::path> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t'))
      line.pop_back();
    size_t b = 0;
    while (b < line.size() && (line[b] == ' ' || line[b] == '\t')) ++b;
    line = line.substr(b);
    if (line.empty() || line[0] == '#') continue;
    CHECK_INPUT(line.find('\0') == std::string::npos, "{}: a line holds a NUL byte",
                printable(list.string()));
    fs::path p(line);
    if (p.is_relative()) p = list.parent_path() / p;
    out.push_back(p);
    if (end == text.size()) break;
  }
  return out;
}

void refuse_overlapping_outputs(const std::vector<std::pair<std::string, std::string>>& outputs) {
  std::vector<std::pair<std::string, fs::path>> canon;
  for (const auto& [option, path] : outputs)
    if (!path.empty())
      canon.push_back({option + " " + printable(path),
                       fs::path(path_key(path)).lexically_normal() / ""});  // "x" == "x/"
  auto inside = [](const fs::path& a, const fs::path& b) {  // a within b (or equal)
    const fs::path rel = a.lexically_relative(b);
    return !rel.empty() && *rel.begin() != "..";
  };
  for (size_t i = 0; i < canon.size(); ++i)
    for (size_t j = i + 1; j < canon.size(); ++j) {
      const auto& [a, pa] = canon[i];
      const auto& [b, pb] = canon[j];
      CHECK_INPUT(pa != pb, "{} and {} are the same path: give each its own", a, b);
      CHECK_INPUT(!inside(pa, pb) && !inside(pb, pa),
                  "{} and {}: one lies inside the other; give separate folders", a, b);
    }
}

void create_parent_folders(const fs::path& path, const std::string& option) {
  std::error_code ec;
  fs::path target = fs::absolute(path, ec).lexically_normal();
  if (!target.has_filename()) target = target.parent_path();  // "out/" names "out"
  const fs::path parent = target.parent_path();
  if (fs::is_directory(parent, ec)) return;
  fs::create_directories(parent, ec);
  CHECK_INPUT(!ec, "{} {}: cannot create the folder {} ({})", option, printable(path.string()),
              printable(parent.string()), ec.message());
}

void check_writable_folder(const fs::path& dir, const std::string& option) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec).lexically_normal();
  if (!p.has_filename()) p = p.parent_path();
  // The folder itself, or the first ancestor that exists (create_directories makes the rest).
  while (!fs::exists(fs::symlink_status(p, ec)) && p.has_parent_path() && p != p.parent_path())
    p = p.parent_path();
  CHECK_INPUT(fs::is_directory(p, ec), "{} {}: {} is not a folder", option,
              printable(dir.string()), printable(p.string()));
  CHECK_INPUT(::access(p.c_str(), W_OK | X_OK) == 0, "{} {}: cannot write into {} ({})", option,
              printable(dir.string()), printable(p.string()), std::strerror(errno));
}

std::vector<std::string> contaminated_paths(const LoadedData& d) {
  std::vector<std::string> out;
  for (const Item& it : d.dataset.train)
    if (it.label == Label::defect) out.push_back(path_key(it.path));
  return out;
}

}  // namespace mirad::cli
