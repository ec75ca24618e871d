// `mirad embed IMAGES... --out feats.safetensors`: backbone features of a set of images, one
// [N, C, H, W] tensor per tap, with the image list and settings in the file's metadata.
#include "tools/cli/embed.h"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"
#include "host/feature_extractor.h"
#include "engine/file_io.h"
#include "tools/cli/progress.h"

namespace mirad::cli {

void add_embed_command(CLI::App& app, EmbedOptions& opt, int* rc) {
  auto* cmd = app.add_subcommand("embed", "Write backbone features of images to safetensors");
  cmd->add_option("images", opt.inputs, "image files or directories (PNG, JPEG)")->required();
  cmd->add_option("--out,-o", opt.out, "output .safetensors file (written atomically)")
      ->required();
  cmd->add_option("--backbone", opt.backbone, "model directory or name in the model cache")
      ->capture_default_str();
  cmd->add_option("--taps", opt.taps, "comma-separated tap names or op indices")
      ->capture_default_str();
  cmd->add_option("--device", opt.device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--batch", opt.batch, "images per backbone batch")
      ->check(CLI::Range(int64_t(1), int64_t(4096)))->capture_default_str();
  cmd->add_option("--size", opt.size, "square input size (0 = the backbone's own)")
      ->check(CLI::Range(0, 4096))->capture_default_str();
  cmd->add_flag("--no-smooth", opt.no_smooth, "skip the 3x3 average smoothing of each tap");
  cmd->add_option("--host-budget-mb", opt.host_budget_mb,
                  "host memory for the feature cache before spilling to a mapped file (0 = auto)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  cmd->add_option("--device-budget-mb", opt.device_budget_mb,
                  "device memory for the feature cache (0 = half of what is free)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 40));
  cmd->add_flag("--json", opt.json, "machine-readable summary on stdout, no progress bar");
  cmd->callback([&opt, rc] { *rc = run_embed(opt); });
}

int run_embed(const EmbedOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  const Device dev = parse_device(opt.device);
  const auto backbone_dir = resolve_backbone(opt.backbone);
  std::vector<std::filesystem::path> inputs(opt.inputs.begin(), opt.inputs.end());
  const auto images = collect_images(inputs);
  refuse_overwriting_inputs(opt.out, inputs);
  FeatureExtractorOptions fo;
  fo.taps.clear();
  std::stringstream ss(opt.taps);
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) fo.taps.push_back(t);
  fo.batch_size = opt.batch;
  fo.image_size = opt.size;
  fo.smooth = !opt.no_smooth;
  fo.budget.host_bytes = uint64_t(opt.host_budget_mb) << 20;
  fo.budget.device_bytes = uint64_t(opt.device_budget_mb) << 20;
  FeatureExtractor fx(backbone_dir, dev, fo);
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
