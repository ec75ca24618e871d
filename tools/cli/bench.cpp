// `mirad bench`: one JSON report of the speeds that matter, on the CPU or the GPU: decode,
// backbone at batch 1/16/64, the flow training step at the default taps' sizes and a large one
// (vectors/s, GFLOP/s of GEMM work), the MAML outer step (first vs second order), quantiles of
// 1M/10M/100M scores, `mirad clean` end to end on a generated category with seconds per phase,
// and peak host (and device) memory.
#include "tools/cli/bench.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/backbone/backbone.h"
#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/flow/flow.h"
#include "engine/training/patch_bank.h"
#include "kernels/quantiles.h"
#include "engine/training/tap_trainer.h"
#include "host/contamination.h"
#include "host/dataset.h"
#include "host/train_job.h"
#include "host/thread_budget.h"
#include "host/episode_scheduler.h"
#include "host/feature_extractor.h"
#include "host/image.h"
#include "host/resize.h"
#include "tools/synth/synth.h"
#include "host/thread_pool.h"
#include "tools/bench/random_bank.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/subcommand.h"
#include "tools/cli/job_common.h"

#ifdef MIRAD_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace mirad::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct BenchOptions {
  std::string device = "cpu", out, backbone = "efficientnet_lite0";
  int threads = 0;
  int64_t clean_images = 100;
  double min_seconds = 1.0;
  bool quick = false, json = false;
};

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Runs fn until min_seconds have passed (at least 2 calls after one warm-up); seconds per call.
template <typename F>
double time_per_call(double min_seconds, F&& fn, Device dev) {
  fn();
  mem::synchronize({});
  int64_t n = 0;
  const auto t0 = Clock::now();
  do {
    fn();
    ++n;
    if (dev == Device::cuda) mem::synchronize({});
  } while (n < 2 || since(t0) < min_seconds);
  mem::synchronize({});
  return since(t0) / double(n);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

double device_used_mb(Device dev) {
#ifdef MIRAD_HAVE_CUDA
  if (dev == Device::cuda) {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) return double(total - free) / 1048576.0;
  }
#endif
  (void)dev;
  return 0;
}

// GEMM flops of one forward of the flow (2 GEMMs per block over [x1, c] and r).
double flow_forward_flops(const FlowConfig& f, int64_t n) {
  const double H = double(f.hidden_width()), d1 = double(f.d1()), d2 = double(f.d2());
  return double(f.n_blocks) * 2.0 * double(n) * (H * (d1 + double(f.cond_dim)) + 2 * d2 * H);
}

json bench_decode(const BenchOptions& o, const fs::path& dir, int threads) {
  // 64 generated 512x512 images, PNG and JPEG-free (PNG only: the encoder we have).
  std::mt19937 rng(1);
  std::vector<fs::path> files;
  for (int i = 0; i < 64; ++i) {
    Image img(512, 512, 3);
    for (size_t k = 0; k < img.numel(); ++k) img.u8()[k] = uint8_t((k * 7 + i * 13 + rng() % 32) & 255);
    files.push_back(dir / fmt::format("d{:02d}.png", i));
    encode_png(files.back(), img, false);
  }
  PreprocessOptions pre;
  pre.resize_height = pre.resize_width = 256;
  ThreadPool pool(threads);
  const double sec = time_per_call(o.min_seconds, [&] {
    pool.parallel_for(files.size(), [&](std::size_t i) {
      Image img = decode_image(files[i]);
      auto x = preprocess(img, pre);
      (void)x;
    });
  }, Device::cpu);
  return {{"images_per_second", double(files.size()) / sec}, {"threads", threads},
          {"what", "PNG 512x512 RGB -> decode, resize to 256x256, normalise"}};
}

// Images per second up to the default taps at batch 1/16/64, in one convolution arithmetic.
json bench_backbone_at(const BenchOptions& o, Device dev, BackbonePrecision precision) {
  const fs::path dir = resolve_backbone(o.backbone);
  BackboneOptions opt;
  opt.precision = precision;
  Backbone bb(dir, dev, {}, opt);
  json out = json::object();
  for (int64_t B : {int64_t(1), int64_t(16), int64_t(64)}) {
    if (o.quick && B == 64) continue;
    const TensorShape shape{B, 3, 256, 256};
    std::vector<float> h(shape.numel());
    std::mt19937 rng(2);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (float& v : h) v = u(rng);
    auto x = Buffer<float>::from_host(h, dev);
    const int taps[] = {bb.tap("stride8"), bb.tap("stride16")};
    const auto shapes = bb.tap_shapes(shape, taps);
    Buffer<float> o1(shapes[0].numel(), dev), o2(shapes[1].numel(), dev);
    float* outs[] = {o1.data(), o2.data()};
    const double sec = time_per_call(o.min_seconds, [&] {
      bb.forward_into(x.data(), shape, taps, outs);
    }, dev);
    out[fmt::format("batch{}", B)] = {{"ms", sec * 1e3}, {"images_per_second", double(B) / sec}};
  }
  return out;
}

json bench_backbone(const BenchOptions& o, Device dev) {
  json out = bench_backbone_at(o, dev, BackbonePrecision::fp32);
  out["input"] = "256x256, EfficientNet-Lite0 up to the stride-16 tap";
  out["precision"] = "fp32";
  // CUDA: the tensor-core arithmetics too (the CPU is always FP32).
  if (dev == Device::cuda)
    for (BackbonePrecision p :
         {BackbonePrecision::tf32, BackbonePrecision::fp16, BackbonePrecision::bf16})
      out["precisions"][backbone_precision_name(p)] = bench_backbone_at(o, dev, p);
  return out;
}

// What `predict` does after the backbone, from features already in memory on the device: the
// flows' NLL maps of every image at the default taps (shapes from the backbone at 256 x 256),
// fused, and the top-1% / mean image scores. The flows are freshly initialised (the work does
// not depend on the parameter values). With the backbone phase's img/s this gives backbone +
// scoring per image, the two running one after the other as in `predict`.
json bench_scoring(const BenchOptions& o, Device dev) {
  const int64_t n_images = o.quick ? 64 : 256;
  DetectorConfig cfg;
  Backbone bb(resolve_backbone(o.backbone), Device::cpu);
  std::vector<int> taps;
  for (const auto& t : cfg.features.taps) taps.push_back(bb.tap(t));
  const auto shapes = bb.tap_shapes(TensorShape{1, 3, 256, 256}, taps);
  std::vector<std::unique_ptr<PatchBank>> banks;
  std::vector<const PatchBank*> ptrs;
  ModelSet ms;
  ScoreStats stats;
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  json tap_rows = json::array();
  for (std::size_t t = 0; t < shapes.size(); ++t) {
    const TensorShape& s = shapes[t];
    std::vector<float> rows(n_images * s.h * s.w * s.c);
    for (float& v : rows) v = nd(rng);
    banks.push_back(std::make_unique<PatchBank>(std::move(rows), n_images, s.c, s.h, s.w,
                                                cfg.flow.cond_dim, dev));
    ptrs.push_back(banks.back().get());
    TapParams tp;
    tp.flow = tap_flow_config(cfg, s.c, int64_t(t));
    tp.theta = CouplingFlow<float>(tp.flow, Device::cpu).init_params().to_host();
    ms.taps.push_back(std::move(tp));
    stats.taps.push_back({});
    tap_rows.push_back({{"tap", cfg.features.taps[t]}, {"channels", s.c}, {"grid", {s.h, s.w}}});
  }
  std::vector<int64_t> ids(n_images);
  for (int64_t i = 0; i < n_images; ++i) ids[i] = i;
  Buffer<float> fused(0, dev);
  const double sec = time_per_call(o.min_seconds, [&] {
    const DeviceTapMaps tm = score_maps_on_device(ms, ptrs, ids, dev);
    score_images(tm, stats, cfg.score, &fused);
  }, dev);
  return {{"images", n_images},
          {"ms", sec * 1e3},
          {"images_per_second", double(n_images) / sec},
          {"taps", tap_rows},
          {"what", "NLL maps of both default taps, fused, image scores; features on the device"}};
}

json bench_flow(const BenchOptions& o, Device dev) {
  json out = json::array();
  std::vector<int64_t> dims = {40, 112};
  if (!o.quick) dims.push_back(dev == Device::cuda ? 1024 : 256);
  for (int64_t D : dims) {
    FlowConfig f;
    f.dim = D;
    const int64_t N = 4096;
    CouplingFlow<float> flow(f, dev);
    flow.set_checks(FlowChecks::none());
    auto params = flow.init_params();
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    std::vector<float> hx(N * D), hc(N * f.cond_dim);
    for (float& v : hx) v = nd(rng);
    for (float& v : hc) v = nd(rng);
    auto x = Buffer<float>::from_host(hx, dev), c = Buffer<float>::from_host(hc, dev);
    Buffer<float> g(flow.n_params(), dev), hv(flow.n_params(), dev);
    MatrixView<const float> xv(x.data(), N, D, dev), cv(c.data(), N, f.cond_dim, dev);
    const double fb = time_per_call(o.min_seconds, [&] { flow.grad_at(params, xv, cv, g); }, dev);
    const double hvp = time_per_call(o.min_seconds, [&] { flow.hvp_at(params, xv, cv, params, g, hv); }, dev);
    // forward+backward does three forward's worth of GEMMs.
    const double flops = 3 * flow_forward_flops(f, N);
    out.push_back({{"dim", D},
                   {"vectors", N},
                   {"forward_backward_ms", fb * 1e3},
                   {"vectors_per_second", double(N) / fb},
                   {"gemm_gflops", flops / fb / 1e9},
                   {"hvp_ms", hvp * 1e3}});
  }
  return out;
}

json bench_maml(const BenchOptions& o, Device dev) {
  // The default tap sizes and task shape: 8 + 8 images x 64 positions, B = 4, n_inner = 1.
  json out = json::array();
  for (int64_t D : {int64_t(40), int64_t(112)}) {
    FlowConfig f;
    f.dim = D;
    auto [bank, images] = bench::random_bank(D, f.cond_dim, dev);
    json row = {{"dim", D}};
    for (bool second : {false, true}) {
      TrainSettings ts;
      ts.mode = TrainMode::maml;
      ts.second_order = second;
      TapTrainer tr(f, ts, dev);
      EpisodeScheduler src(images, {}, ts.support, ts.query, 5);
      auto theta = tr.init_params(bank, src);
      // One outer step = one train() call with a budget of one step (n_final 0 here).
      ts.n_final = 0;
      TapTrainer step(f, ts, dev);
      DetectorConfig c;
      c.train = ts;
      const int64_t budget = c.evals_per_step();
      const double sec = time_per_call(o.min_seconds, [&] { step.train(theta, bank, src, budget); }, dev);
      row[second ? "second_order_ms" : "first_order_ms"] = sec * 1e3;
    }
    row["ratio"] = row["second_order_ms"].get<double>() / row["first_order_ms"].get<double>();
    out.push_back(row);
  }
  return out;
}

json bench_quantiles(const BenchOptions& o, Device dev) {
  json out = json::object();
  for (int64_t n : {int64_t(1) << 20, int64_t(10) << 20, int64_t(100) << 20}) {
    if (o.quick && n > (int64_t(10) << 20)) continue;
    std::vector<float> h(n);
    std::mt19937 rng(6);
    std::normal_distribution<float> nd;
    for (float& v : h) v = nd(rng);
    double sec = 0;
    if (dev == Device::cuda) {
      auto d = Buffer<float>::from_host(h, dev);
      QuantileWorkspace ws;
      sec = time_per_call(o.min_seconds, [&] { quartiles_cuda(d.data(), n, {}, ws); }, dev);
    } else {
      sec = time_per_call(o.min_seconds, [&] { quartiles_cpu(h.data(), n); }, dev);
    }
    out[fmt::format("{}M", n >> 20)] = {{"ms", sec * 1e3}};
  }
  return out;
}

json bench_clean(const BenchOptions& o, Device dev, const fs::path& dir, int threads) {
  synth::SynthOptions so;
  so.out = dir / "synth";
  so.categories = {"wood"};
  so.n_train = int(o.clean_images);
  so.n_test_good = 2;
  // Enough defective test images for 10% contamination (5 defect types).
  so.n_test_defect = int(o.clean_images / 50 + 1);
  ThreadPool pool(threads);
  synth::generate(so, pool);
  const Dataset clean = load_mvtec(dir / "synth" / "wood");
  ContaminationOptions co;
  co.ratio = 0.1;
  const auto cont = contaminate(clean, co);
  TrainJob job;
  for (const Item& it : cont.dataset.train) job.images.push_back(it.path);
  job.config.device = device_name(dev);
  job.threads = threads;
  const auto t0 = Clock::now();
  const TrainResult r = run_train_job(job);
  const double total = since(t0);
  return {{"images", job.images.size()},
          {"seconds", total},
          {"feature_seconds", r.feature_seconds},
          {"refine_seconds", r.refine_seconds},
          {"rounds", r.refinement.rounds.size()},
          {"what", "mirad clean's job (features + refinement + model) on a generated wood "
                   "category with 10% contamination, default config"}};
}

int run_bench(const BenchOptions& o) {
  const Device dev = parse_device(o.device);
  const int threads = apply_thread_budget(o.threads);
  if (!o.out.empty()) check_output_file(o.out);
  std::string tmpl = (fs::temp_directory_path() / "mirad_bench_XXXXXX").string();
  CHECK_INPUT(::mkdtemp(tmpl.data()) != nullptr, "bench: cannot create a temporary folder {} "
              "({})", tmpl, std::strerror(errno));
  const fs::path tmp(tmpl);
  json report = {{"device", device_name(dev)}, {"threads", threads}};
  auto phase = [&](const char* name, auto&& fn) {
    if (!o.json) std::fprintf(stderr, "bench: %s...\n", name);
    const auto t0 = Clock::now();
    try {
      json r = fn();
      report[name] = r.is_array() ? json{{"cases", r}} : r;
    } catch (const std::exception& e) {
      report[name] = {{"error", e.what()}};
    }
    report[name]["bench_seconds"] = since(t0);
    report[name]["device_used_mb"] = device_used_mb(dev);
  };
  phase("decode", [&] { return bench_decode(o, tmp, threads); });
  phase("backbone", [&] { return bench_backbone(o, dev); });
  phase("scoring", [&] { return bench_scoring(o, dev); });
  // Backbone (fastest arithmetic measured, batch 64) and scoring one after the other, per image.
  {
    const json& b = report["backbone"];
    const json& sc = report["scoring"];
    double best = 0;
    std::string arith;
    auto consider = [&](const json& r, const std::string& name) {
      if (r.contains("batch64") && r["batch64"]["images_per_second"].get<double>() > best)
        best = r["batch64"]["images_per_second"].get<double>(), arith = name;
    };
    consider(b, "fp32");
    if (b.contains("precisions"))
      for (auto it = b["precisions"].begin(); it != b["precisions"].end(); ++it)
        consider(it.value(), it.key());
    if (best > 0 && sc.contains("images_per_second")) {
      const double both = 1.0 / (1.0 / best + 1.0 / sc["images_per_second"].get<double>());
      report["backbone_and_scoring"] = {
          {"images_per_second", both},
          {"backbone_precision", arith},
          {"what", "1 / (1 / backbone img/s at batch 64 + 1 / scoring img/s), both measured "
                   "above; decode not included"}};
    }
  }
  phase("flow_step", [&] { return bench_flow(o, dev); });
  phase("maml_step", [&] { return bench_maml(o, dev); });
  phase("quantiles", [&] { return bench_quantiles(o, dev); });
  phase("clean", [&] { return bench_clean(o, dev, tmp, threads); });
  report["peak_rss_mb"] = peak_rss_mb();
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (!o.out.empty()) write_file_atomic(o.out, report.dump(2) + "\n");
  std::printf("%s\n", report.dump(2).c_str());
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<BenchOptions>(
      app, "bench",
      "Measure decode, backbone, flow and MAML steps, "
      "quantiles and a whole clean job; JSON report",
      "Examples:\n  mirad bench --out bench_cpu.json\n"
      "  mirad bench --device cuda --clean-images 1000 --out bench_gpu.json",
      rc, run_bench);
  cmd->add_option("--device", o->device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_option("--out,-o", o->out, "also write the report here")->check(NonEmpty());
  cmd->add_option("--threads", o->threads, kThreadsHelp)
      ->check(ThreadCount());
  cmd->add_option("--clean-images", o->clean_images, "good images of the clean job")
      ->check(IntegerRange(10, 100000))->capture_default_str();
  cmd->add_option("--min-seconds", o->min_seconds, "time each measurement at least this long")
      ->check(FiniteRange(0.0, 600.0))->capture_default_str();
  cmd->add_flag("--quick", o->quick, "skip the largest cases (batch 64, 100M scores, D 256/1024)");
  cmd->add_flag("--json", o->json, "no progress lines on stderr");
}

}  // namespace mirad::cli
