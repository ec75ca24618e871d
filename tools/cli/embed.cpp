// `mirad embed IMAGES... --out feats.safetensors`: backbone features of a set of images, one
// [N, C, H, W] tensor per tap, with the image list and settings in the file's metadata.
#include "tools/cli/embed.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/error.h"
#include "engine/file_io.h"
#include "engine/json_io.h"
#include "engine/safetensors.h"
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
  cmd->add_option("--size", opt.size, "square input size (0 = the backbone's own)")
      ->check(IntegerRange(0, 4096))
      ->capture_default_str();
  cmd->add_flag("--no-smooth", opt.no_smooth, "skip the 3x3 average smoothing of each tap");
  cmd->add_option("--host-budget-mb", opt.host_budget_mb,
                  "host memory for the feature cache before spilling to a mapped file (0 = auto)")
      ->check(IntegerRange(0, int64_t(1) << 40));
  cmd->add_option("--device-budget-mb", opt.device_budget_mb,
                  "device memory for the feature cache (0 = half of what is free)")
      ->check(IntegerRange(0, int64_t(1) << 40));
  cmd->add_flag("--json", opt.json, "machine-readable summary on stdout, no progress bar");
  cmd->callback([&opt, rc] { *rc = run_embed(opt); });
}

int run_embed(const EmbedOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const Device dev = parse_device(opt.device);
  FeatureExtractorOptions fo;
  fo.taps.clear();
  std::stringstream ss(opt.taps);
  std::set<std::string> seen;
  for (std::string t; std::getline(ss, t, ',');) {
    if (t.empty()) continue;
    // One tensor per tap name: a repeat would be computed twice and written once.
    CHECK_INPUT(seen.insert(t).second, "--taps: '{}' is listed twice", printable(t));
    fo.taps.push_back(t);
  }
  CHECK_INPUT(!fo.taps.empty(), "--taps: no tap given");
  const auto backbone_dir = resolve_backbone(opt.backbone);
  std::vector<std::filesystem::path> inputs(opt.inputs.begin(), opt.inputs.end());
  const auto images = collect_images(inputs);
  // Before any work: the output replaces no input (the images, their folders, the backbone
  // folder with its weights and graph) and no device or link, and every name that goes into
  // the file's JSON metadata is UTF-8 (else it would fail only after all the work).
  std::vector<std::filesystem::path> protected_paths = inputs;
  protected_paths.push_back(backbone_dir);
  check_output(opt.out, protected_paths);
  require_utf8_path(opt.out, "--out");
  require_utf8_path(backbone_dir, "--backbone");
  for (const auto& p : images) require_utf8_path(p, "embed");
  fo.batch_size = opt.batch;
  fo.image_size = opt.size;
  fo.smooth = !opt.no_smooth;
  fo.budget.host_bytes = uint64_t(opt.host_budget_mb) << 20;
  fo.budget.device_bytes = uint64_t(opt.device_budget_mb) << 20;
  FeatureExtractor fx(backbone_dir, dev, fo);
  // Two spellings can name one tensor ("20" is written as "op20").
  for (std::size_t a = 0; a < fx.tap_names().size(); ++a)
    for (std::size_t b = a + 1; b < fx.tap_names().size(); ++b)
      CHECK_INPUT(fx.tap_names()[a] != fx.tap_names()[b],
                  "--taps: '{}' and '{}' are the same tap ({})", fo.taps[a], fo.taps[b],
                  fx.tap_names()[a]);
  Progress bar("embedding", int64_t(images.size()), !opt.json);
  auto cache = fx.extract(images, [&](int64_t done, int64_t) { bar.update(done); });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::map<std::string, HostTensor> tensors;
  nlohmann::json taps_json = nlohmann::json::object();
  const int64_t N = int64_t(images.size());
  for (size_t t = 0; t < fx.tap_shapes().size(); ++t) {
    const auto& s = fx.tap_shapes()[t];
    HostTensor h;
    h.shape = {N, s.channels, s.height, s.width};
    h.data.resize(size_t(N) * s.numel());
    cache->gather([&] {
      std::vector<int64_t> all(N);
      for (int64_t i = 0; i < N; ++i) all[i] = i;
      return all;
    }(), int(t), h.data.data(), Device::cpu);
    tensors[fx.tap_names()[t]] = std::move(h);
    taps_json[fx.tap_names()[t]] = {{"op", fx.tap_ops()[t]},
                                    {"shape", {s.channels, s.height, s.width}}};
  }
  mem::synchronize({});
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : images) paths.push_back(p.string());
  const std::map<std::string, std::string> meta = {
      {"format", "mirad-features"},
      {"version", "1"},
      {"backbone", backbone_dir.string()},
      {"backbone_name", fx.backbone().graph().model_name},
      {"taps", taps_json.dump()},
      {"smoothing", fo.smooth ? "avg3x3" : "none"},
      {"input_size", std::to_string(fx.preprocess().resize_height)},
      {"images", paths.dump()}};
  save_safetensors(opt.out, tensors, meta);
  if (opt.json) {
    nlohmann::json out = {{"command", "embed"},
                          {"images", N},
                          {"out", opt.out},
                          {"device", device_name(dev)},
                          {"backbone", backbone_dir.string()},
                          {"taps", taps_json},
                          {"cache_tier", cache_tier_name(cache->tier())},
                          {"pinned_ring", fx.pinned()},
                          {"seconds", secs},
                          {"images_per_second", N / secs}};
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::printf("embedded %lld images in %.2f s (%.1f images/s) on %s -> %s\n", (long long)N,
                secs, N / secs, device_name(dev), opt.out.c_str());
    for (size_t t = 0; t < fx.tap_shapes().size(); ++t) {
      const auto& s = fx.tap_shapes()[t];
      std::printf("  %s (op %d): %lld x %lld x %lld\n", fx.tap_names()[t].c_str(),
                  fx.tap_ops()[t], (long long)s.channels, (long long)s.height,
                  (long long)s.width);
    }
  }
  return 0;
}

}  // namespace mirad::cli
