// `mirad embed IMAGES... --out feats.safetensors`: backbone features of a set of images, one
// [N, C, H, W] tensor per tap, with the image list and settings in the file's metadata.
#include "tools/cli/embed.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/safetensors.h"
#include "engine/io/sha256.h"
#include "host/features.h"
#include "host/features_file.h"
#include "host/input_size.h"
#include "host/feature_extractor.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/progress.h"

namespace mirad::cli {

void add_embed_command(CLI::App& app, EmbedOptions& opt, int* rc) {
  auto* cmd = app.add_subcommand("embed", "Write backbone features of images to safetensors");
  cmd->add_option("images", opt.inputs, "image files or directories (PNG, JPEG)")
      ->required()
      ->check(NonEmpty());
  cmd->add_option("--out,-o", opt.out, "output .safetensors file (written atomically)")
      ->required()
      ->check(NonEmpty());
  cmd->add_option("--backbone", opt.backbone, "model directory or name in the model cache")
      ->check(NonEmpty())
      ->capture_default_str();
  cmd->add_option("--taps", opt.taps, "comma-separated tap names or op indices")
      ->check(NonEmpty())
      ->capture_default_str();
  cmd->add_option("--device", opt.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--batch", opt.batch, "images per backbone batch")
      ->check(IntegerRange(1, 4096))
      ->capture_default_str();
  cmd->add_option("--size", opt.size,
                  "input size: N = short side N with the images' aspect ratio (as train uses), "
                  "or HxW")
      ->check(NonEmpty())
      ->capture_default_str();
  cmd->add_option("--normalize", opt.normalize,
                  "normalisation preset when the backbone's graph has none")
      ->check(CLI::IsMember({"imagenet", "tf_inception", "efficientnet_lite", "unit"}));
  cmd->add_flag("--strict", opt.strict, "an undecodable image stops the run (default: skipped, "
                                        "listed in the file's metadata)");
  cmd->add_flag("--no-smooth", opt.no_smooth, "skip the 3x3 average smoothing of each tap");
  cmd->add_option("--precision", opt.precision,
                  "CUDA backbone arithmetic: fp32 (exact), tf32, or fp16 / bf16 (16-bit NHWC on "
                  "tensor cores); the CPU is always fp32. A later run must use the same "
                  "(features.precision)")
      ->check(CLI::IsMember({"fp32", "tf32", "fp16", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--host-budget-mb", opt.host_budget_mb,
                  "host memory for the feature cache before spilling to a mapped file (0 = auto)")
      ->check(IntegerRange(0, int64_t(1) << 40));
  cmd->add_option("--device-budget-mb", opt.device_budget_mb,
                  "device memory for the feature cache (0 = half of what is free)")
      ->check(IntegerRange(0, int64_t(1) << 40));
  cmd->add_flag("--json", opt.json, "machine-readable summary on stdout, no progress bar");
  cmd->callback([&opt, rc] { *rc = run_embed(opt); });
}

namespace {

// "--size N": short side N, the long side from the images' most common aspect ratio (what
// train/clean/predict do, so the file can be reused by them); "--size HxW": exactly that.
InputSize parse_size(const std::string& text, const std::vector<std::filesystem::path>& images) {
  const auto x = text.find('x');
  auto number = [&](const std::string& t) {
    int v = 0;
    const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    CHECK_INPUT(!t.empty() && ec == std::errc() && end == t.data() + t.size() && v >= 16 &&
                    v <= 4096,
                "--size {}: expected N (short side) or HxW, each in [16, 4096]", printable(text));
    return v;
  };
  if (x == std::string::npos) return choose_input_size(images, number(text));
  return {number(text.substr(0, x)), number(text.substr(x + 1))};
}

// An existing --out file is replaced only when it is a features file of ours (its safetensors
// metadata says "format": "mirad-features"): a model's flow.safetensors or a backbone's weights
// are not. Only the header is read (a features file can be gigabytes).
void refuse_replacing_other_files(const std::filesystem::path& out) {
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(out, ec))) return;
  bool ours = false;
  try {
    const int fd = open_regular_file(out);
    std::string header;
    uint8_t len[8];
    if (::pread(fd, len, 8, 0) == 8) {
      uint64_t n = 0;
      for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
      if (n <= kMaxSafetensorsHeaderBytes) {
        header.resize(n);
        if (::pread(fd, header.data(), n, 8) != ssize_t(n)) header.clear();
      }
    }
    ::close(fd);
    const auto j = parse_json_bounded(header, out.string());
    ours = j.is_object() && j.contains("__metadata__") && j["__metadata__"].is_object() &&
           j["__metadata__"].value("format", "") == "mirad-features";
  } catch (const std::exception&) {
  }
  CHECK_INPUT(ours, "--out {}: exists and is not a mirad features file (mirad embed's); "
              "refusing to replace it: choose another file name", printable(out.string()));
}

}  // namespace

int run_embed(const EmbedOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const Device dev = parse_device(opt.device);
  FeatureRequest req;
  req.settings.taps.clear();
  std::stringstream ss(opt.taps);
  std::set<std::string> seen;
  for (std::string t; std::getline(ss, t, ',');) {
    if (t.empty()) continue;
    // One tensor per tap name: a repeat would be computed twice and written once.
    CHECK_INPUT(seen.insert(t).second, "--taps: '{}' is listed twice", printable(t));
    req.settings.taps.push_back(t);
  }
  CHECK_INPUT(!req.settings.taps.empty(), "--taps: no tap given");
  const auto backbone_dir = resolve_backbone(opt.backbone);
  std::vector<std::filesystem::path> inputs(opt.inputs.begin(), opt.inputs.end());
  const auto images = collect_images(inputs);
  // Before any work: the output replaces no input (the images, their folders, the backbone
  // folder with its weights and graph) and no device or link, and every name that goes into
  // the file's JSON metadata is UTF-8 (else it would fail only after all the work).
  std::vector<std::filesystem::path> protected_paths = inputs;
  protected_paths.push_back(backbone_dir);
  check_output(opt.out, protected_paths);
  refuse_replacing_other_files(opt.out);
  require_utf8_path(opt.out, "--out");
  require_utf8_path(backbone_dir, "--backbone");
  for (const auto& p : images) require_utf8_path(p, "embed");
  req.settings.backbone = backbone_dir.string();
  req.settings.batch = opt.batch;
  req.settings.smooth = !opt.no_smooth;
  req.settings.precision = opt.precision;
  req.size = parse_size(opt.size, images);
  req.settings.short_side = std::min(req.size.height, req.size.width);
  req.device = dev;
  req.strict = opt.strict;
  req.normalize = opt.normalize;
  req.budget.host_bytes = uint64_t(opt.host_budget_mb) << 20;
  req.budget.device_bytes = uint64_t(opt.device_budget_mb) << 20;
  // Content hashes let a later run refuse this file once an image has changed.
  std::vector<std::string> hashes;
  for (const auto& p : images) hashes.push_back(sha256_file(p));
  JobBar bar(!opt.json);
  const JobProgress draw = bar.callback();
  Features f = compute_features(images, req, [&](const std::string&, int64_t done, int64_t, double) {
    draw("embedding", done, int64_t(images.size()), NAN);
  });
  for (std::size_t a = 0; a < f.tap_names.size(); ++a)
    for (std::size_t b = a + 1; b < f.tap_names.size(); ++b)
      CHECK_INPUT(f.tap_names[a] != f.tap_names[b],
                  "--taps: '{}' and '{}' are the same tap ({})", req.settings.taps[a],
                  req.settings.taps[b], f.tap_names[a]);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const FeatureCache* cache = f.cache.get();

  std::map<std::string, HostTensor> tensors;
  nlohmann::json taps_json = nlohmann::json::object();
  const int64_t N = int64_t(images.size());
  for (size_t t = 0; t < f.shapes.size(); ++t) {
    const auto& s = f.shapes[t];
    HostTensor h;
    h.shape = {N, s.channels, s.height, s.width};
    h.data.resize(size_t(N) * s.numel());
    cache->gather([&] {
      std::vector<int64_t> all(N);
      for (int64_t i = 0; i < N; ++i) all[i] = i;
      return all;
    }(), int(t), h.data.data(), Device::cpu);
    tensors[f.tap_names[t]] = std::move(h);
    taps_json[f.tap_names[t]] = {{"op", f.tap_ops[t]}, {"shape", {s.channels, s.height, s.width}}};
  }
  mem::synchronize({});
  auto meta = features_metadata(f, images, hashes);
  meta["taps"] = taps_json.dump();
  save_safetensors(opt.out, tensors, meta);
  nlohmann::json failed = nlohmann::json::array();
  for (const auto& e : f.failures)
    failed.push_back({{"path", images[e.index].string()}, {"error", e.message}});
  if (opt.json) {
    nlohmann::json out = {{"command", "embed"},
                          {"images", N},
                          {"failed", failed},
                          {"out", opt.out},
                          {"device", device_name(dev)},
                          {"backbone", backbone_dir.string()},
                          {"input_size", {req.size.height, req.size.width}},
                          {"taps", taps_json},
                          {"cache_tier", cache_tier_name(cache->tier())},
                          {"seconds", secs},
                          {"images_per_second", N / secs}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("embedded %lld images at %d x %d in %.2f s (%.1f images/s) on %s -> %s\n",
                (long long)N, req.size.height, req.size.width, secs, N / secs, device_name(dev),
                opt.out.c_str());
    for (size_t t = 0; t < f.shapes.size(); ++t) {
      const auto& s = f.shapes[t];
      std::printf("  %s (op %d): %lld x %lld x %lld\n", f.tap_names[t].c_str(), f.tap_ops[t],
                  (long long)s.channels, (long long)s.height, (long long)s.width);
    }
    for (const auto& e : f.failures)
      std::printf("  skipped (cannot decode): %s: %s\n", printable(images[e.index].string()).c_str(),
                  e.message.c_str());
  }
  return 0;
}

}  // namespace mirad::cli
