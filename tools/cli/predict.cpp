// `mirad predict` (scores, decisions, heatmap overlays of new images), `mirad eval` (metrics on
// a labelled test split) and `mirad info MODEL` (what a model holds).
#include "tools/cli/predict.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>

#include "core/device.h"
#include "core/error.h"
#include "kernels/vec_math.h"
#include "engine/io/csv.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/json_number.h"
#include "engine/io/output_dir.h"
#include "host/evaluation.h"
#include "host/feature_extractor.h"
#include "host/heatmap.h"
#include "host/image.h"
#include "host/predictor.h"
#include "host/thread_budget.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/subcommand.h"
#include "tools/cli/job_common.h"

namespace mirad::cli {

namespace fs = std::filesystem;

namespace {

struct PredictOptions {
  std::string model, out, device, backbone;
  std::vector<std::string> images;
  int threads = 0;
  bool no_maps = false, strict = false, json = false;
};

struct EvalOptions {
  std::string model, out, device, backbone, subset;
  DataOptions data;
  int threads = 0;
  bool strict = false, json = false;
};

// predict --out: predictions.json (its marker), predictions.csv and maps/*.png.
OutputKind predict_output_kind() {
  auto is_ours = [](const fs::path& dir) {
    try {
      const auto j = read_json_file(dir / "predictions.json", uint64_t(1) << 30);
      return j.is_object() && j.value("command", "") == "predict";
    } catch (const std::exception&) {
      return false;
    }
  };
  auto owns = [](const fs::path& rel, bool is_dir) {
    if (rel == "maps") return is_dir;
    if (rel.parent_path() == "maps") return !is_dir && rel.extension() == ".png";
    return !is_dir && (rel == "predictions.csv" || rel == "predictions.json");
  };
  return {"a mirad predict output (predictions.json)", is_ours, owns};
}

// Every name that goes into JSON output must be UTF-8 (nlohmann's dump() throws on others):
// checked before any work, naming the file, as train and embed do.
void require_utf8_for_json(const std::vector<fs::path>& paths, const char* what) {
  for (const auto& p : paths) require_utf8_path(p, what);
}

// A message for JSON: as it is when it is UTF-8 (it may quote a file's bytes otherwise).
std::string json_text(const std::string& s) { return is_valid_utf8(s) ? s : printable(s); }

int run_predict(const PredictOptions& o) {
  std::vector<fs::path> inputs(o.images.begin(), o.images.end());
  const auto images = collect_images(inputs);
  inputs.push_back(o.model);
  if (o.json || !o.out.empty()) {
    require_utf8_path(o.model, "--model");
    require_utf8_for_json(images, "predict");
  }
  std::optional<StagedDir> staged;
  if (!o.out.empty()) {
    refuse_overwriting_inputs(o.out, inputs);
    // Built whole in a hidden folder beside --out and swapped in at the end: a rerun replaces
    // maps/ as a whole, and a kill leaves no half output.
    create_parent_folders(o.out, "--out");
    staged.emplace(o.out, predict_output_kind(), "--out");
  }
  DetectorModel model = load_detector(o.model);
  const Device device = parse_device(o.device.empty() ? model.config.device : o.device);
  apply_thread_budget(o.threads);
  const Predictor pred(std::move(model), device, o.threads, o.backbone);
  JobBar bar(!o.json);
  const bool maps = !o.out.empty() && !o.no_maps;
  const auto preds = pred.predict(images, maps, o.strict, bar.callback());
  const DetectorModel& m = pred.model();
  nlohmann::json list = nlohmann::json::array();
  std::string csv = "path,score,anomalous,threshold\n";
  int64_t anomalous = 0, failed = 0;
  std::error_code ec;
  for (size_t i = 0; i < preds.size(); ++i) {
    const Prediction& p = preds[i];
    nlohmann::json e = {{"path", p.path.string()}, {"score", json_number(p.score)},
                        {"anomalous", p.anomalous}};
    if (!p.error.empty()) e["error"] = json_text(p.error), ++failed;
    else if (p.anomalous) ++anomalous;
    if (maps && p.error.empty()) {
      fs::create_directories(staged->path() / "maps", ec);
      const std::string name = fmt::format("{:04d}_{}.png", i, p.path.stem().string());
      Image img = decode_image(p.path);
      encode_png(staged->path() / "maps" / name,
                 heatmap_overlay(img, p.map.data(), p.height, p.width, m.stats.map_lo, m.stats.map_hi),
                 false);
      e["heatmap"] = (fs::path("maps") / name).string();
    }
    csv += fmt::format("{},{},{},{:.6g}\n", csv_field(p.path.string()),
                       std::isfinite(p.score) ? fmt::format("{:.6g}", p.score) : "nan",
                       p.error.empty() ? (p.anomalous ? "1" : "0") : "error", m.threshold);
    list.push_back(e);
  }
  nlohmann::json doc = {{"command", "predict"},   {"model", o.model},
                        {"threshold", m.threshold}, {"images", preds.size()},
                        {"anomalous", anomalous},   {"failed", failed},
                        {"predictions", list}};
  const bool none_scored = failed == int64_t(preds.size());
  if (staged && !none_scored) {
    // Serialised before anything is written: predictions.json is there whenever the rest is.
    const std::string text = doc.dump(1) + "\n";
    write_file_atomic(staged->path() / "predictions.csv", csv);
    write_file_atomic(staged->path() / "predictions.json", text);
    staged->commit();
  }
  if (o.json) {
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    for (const auto& p : preds) {
      if (!p.error.empty())
        std::printf("%-60s error: %s\n", printable(p.path.string()).c_str(),
                    printable(p.error).c_str());
      else
        std::printf("%-60s %9.3f  %s\n", printable(p.path.string()).c_str(), p.score,
                    p.anomalous ? "ANOMALOUS" : "ok");
    }
    if (!none_scored)
      std::printf("%lld of %zu anomalous (threshold %.3f)%s\n", (long long)anomalous,
                  preds.size(), m.threshold,
                  o.out.empty() ? "" : fmt::format("; written to {}", o.out).c_str());
  }
  if (none_scored) {
    std::fprintf(stderr, "mirad: error: none of the %zu images could be scored (each failed: "
                 "see its error)%s\n", preds.size(),
                 o.out.empty() ? "" : "; nothing was written to --out");
    return 2;
  }
  return 0;
}

void print_metrics(const char* title, const EvalMetrics& e) {
  std::printf("%s: %lld images (%lld good, %lld defective)\n", title, (long long)e.images,
              (long long)e.good, (long long)e.defect);
  std::printf("  image AUROC            %.4f\n", e.image_auroc);
  std::printf("  pixel AUROC            %.4f   (at each mask's resolution)\n", e.pixel_auroc);
  std::printf("  AUPRO (FPR <= 0.3)     %.4f\n", e.aupro);
  std::printf("  F1-max                 %.4f\n", e.f1_max);
  std::printf("  F1 at threshold        %.4f   (precision %.3f, recall %.3f)\n",
              e.f1_at_threshold, e.precision_at_threshold, e.recall_at_threshold);
  std::printf("  good FPR at threshold  %.4f\n", e.good_fpr_at_threshold);
  for (const auto& [k, v] : e.auroc_by_defect) std::printf("  AUROC %-16s %.4f\n", k.c_str(), v);
}

int run_eval(const EvalOptions& o) {
  LoadedData d = load_data(o.data);
  CHECK_INPUT(!d.dataset.test.empty(), "--data {}: no test split to evaluate on",
              printable(o.data.data));
  std::vector<fs::path> inputs = d.inputs;
  inputs.push_back(o.model);
  if (!o.out.empty()) check_output(o.out, inputs);
  if (o.json || !o.out.empty()) {
    require_utf8_path(o.model, "--model");
    require_utf8_path(o.data.data, "--data");
    for (const Item& it : d.dataset.test) {
      require_utf8_path(it.path, "eval");
      CHECK_INPUT(is_valid_utf8(it.defect_type), "eval: the defect type {} of {} is not valid "
                  "UTF-8", printable(it.defect_type), printable(it.path.string()));
    }
  }
  std::vector<fs::path> subset;
  if (!o.subset.empty()) subset = read_path_list(o.subset);
  DetectorModel model = load_detector(o.model);
  const Device device = parse_device(o.device.empty() ? model.config.device : o.device);
  apply_thread_budget(o.threads);
  const Predictor pred(std::move(model), device, o.threads, o.backbone);
  JobBar bar(!o.json);
  const EvalReport r = evaluate(pred, d.dataset.test, subset, o.strict, bar.callback());
  nlohmann::json scores = nlohmann::json::array();
  for (size_t i = 0; i < r.items.size(); ++i)
    scores.push_back({{"path", r.items[i].path.string()},
                      {"label", label_name(r.items[i].label)},
                      {"defect_type", r.items[i].defect_type},
                      {"score", json_number(r.predictions[i].score)}});
  nlohmann::json doc = {{"command", "eval"},
                        {"model", o.model},
                        {"data", o.data.data},
                        {"threshold", r.threshold},
                        {"test", r.all.to_json()},
                        {"scores", scores},
                        {"seconds", r.seconds}};
  nlohmann::json skipped = nlohmann::json::array();
  for (size_t i = 0; i < r.items.size(); ++i)
    if (!r.predictions[i].error.empty())
      skipped.push_back({{"path", r.items[i].path.string()},
                         {"error", json_text(r.predictions[i].error)}});
  doc["skipped"] = skipped;
  if (r.subset) doc["subset"] = r.subset->to_json();
  // Nothing scored: every metric would be NaN; an error, not a report.
  const bool none_scored = r.all.images == 0;
  if (!o.out.empty() && !none_scored) write_file_atomic(o.out, doc.dump(1) + "\n");
  if (o.json) {
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    for (size_t i = 0; i < r.items.size(); ++i)
      if (!r.predictions[i].error.empty())
        std::printf("skipped (cannot decode): %s: %s\n",
                    printable(r.items[i].path.string()).c_str(),
                    printable(r.predictions[i].error).c_str());
    if (!none_scored) {
      print_metrics("test split", r.all);
      if (r.subset) print_metrics("subset", *r.subset);
      std::printf("threshold %.3f; %.1f s\n", r.threshold, r.seconds);
    }
  }
  if (none_scored) {
    std::fprintf(stderr, "mirad: error: none of the %zu test images could be scored (each "
                 "failed: see the skipped list); no metrics\n", r.items.size());
    return 2;
  }
  return 0;
}

int run_model_info(const std::string& dir, bool json) {
  const DetectorModel m = load_detector(dir);
  if (json) {
    nlohmann::json taps = nlohmann::json::array();
    for (const auto& t : m.taps)
      taps.push_back({{"name", t.name}, {"op", t.op}, {"shape", {t.channels, t.height, t.width}},
                      {"parameters", t.params.theta.size()}});
    std::printf("%s\n", nlohmann::json({{"model", dir},
                                        {"backbone", m.backbone.name},
                                        {"backbone_sha256", m.backbone.weights_sha256},
                                        {"input", {m.backbone.input_height, m.backbone.input_width}},
                                        {"taps", taps},
                                        {"threshold", m.threshold},
                                        {"retained", m.retained.size()},
                                        {"rejected", m.rejected.size()},
                                        {"config", m.config.to_json()},
                                        {"training", m.training}})
                            .dump(2)
                            .c_str());
    return 0;
  }
  std::printf("mirad detector %s (schema %d)\n", dir.c_str(), DetectorModel::kSchemaVersion);
  std::printf("backbone: %s (weights sha256 %s), input %lld x %lld\n", m.backbone.name.c_str(),
              m.backbone.weights_sha256.c_str(), (long long)m.backbone.input_height,
              (long long)m.backbone.input_width);
  for (const auto& t : m.taps)
    std::printf("tap %s (op %d): %lld x %lld x %lld, flow %lld blocks, %zu parameters\n",
                t.name.c_str(), t.op, (long long)t.channels, (long long)t.height,
                (long long)t.width, (long long)t.params.flow.n_blocks, t.params.theta.size());
  std::printf("training: %s, %s scoring, rule %s; %zu retained, %zu rejected (%s)\n",
              name_of(m.config.train.mode), name_of(m.config.refine.scoring),
              name_of(m.config.refine.rule), m.retained.size(), m.rejected.size(),
              m.training.value("stop_reason", std::string("?")).c_str());
  std::printf("threshold: %.4f (%s)\n", m.threshold, m.threshold_detail.c_str());
  return 0;
}

// --device, --backbone, --threads: where and how predict and eval run a saved model.
void add_model_run_options(CLI::App* cmd, std::string& device, std::string& backbone,
                           int& threads) {
  cmd->add_option("--device", device, "cpu or cuda (default: the model's)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--backbone", backbone, "backbone folder/name (must have the model's "
                                          "weights sha256)");
  cmd->add_option("--threads", threads, kThreadsHelp)->check(ThreadCount());
}

}  // namespace

void add_predict_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<PredictOptions>(
      app, "predict",
      "Score new images with a trained detector: scores, "
      "pass/fail decisions and heatmap overlays",
      "Examples:\n"
      "  mirad predict --model bottle.model new/*.png\n"
      "  mirad predict --model bottle.model new/ --out results/ --json",
      rc, run_predict);
  cmd->add_option("--model,-m", o->model, "model folder")->required()->check(NonEmpty());
  cmd->add_option("images", o->images, "image files or folders")->required();
  cmd->add_option("--out,-o", o->out, "folder for predictions.csv/json and maps/ overlays")
      ->check(NonEmpty());
  add_model_run_options(cmd, o->device, o->backbone, o->threads);
  cmd->add_flag("--no-maps", o->no_maps, "skip the heatmap overlays");
  cmd->add_flag("--strict", o->strict, "an undecodable image stops the run");
  cmd->add_flag("--json", o->json, "machine-readable JSON on stdout");
}

void add_eval_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<EvalOptions>(
      app, "eval",
      "Evaluate a detector on a dataset's test split: image "
      "and pixel AUROC, AUPRO, F1, FPR at the threshold",
      "Examples:\n"
      "  mirad eval --model bottle.model --data /data/mvtec/bottle\n"
      "  mirad eval --model m --data ds --contamination ds_r40.json --subset common.txt "
      "--json",
      rc, run_eval);
  cmd->add_option("--model,-m", o->model, "model folder")->required()->check(NonEmpty());
  add_data_options(cmd, o->data);
  cmd->add_option("--subset", o->subset, "list file of test images reported separately (the "
                                         "common subset)")->check(NonEmpty());
  cmd->add_option("--out,-o", o->out, "also write the JSON report to this file")
      ->check(NonEmpty());
  add_model_run_options(cmd, o->device, o->backbone, o->threads);
  cmd->add_flag("--strict", o->strict, "an undecodable image stops the run");
  cmd->add_flag("--json", o->json, "machine-readable JSON on stdout");
}

void add_info_command(CLI::App& app, int* rc) {
  auto model = std::make_shared<std::string>();
  auto json = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("info", "Build and device information, or what a model holds");
  cmd->footer("Examples:\n  mirad info\n  mirad info bottle.model --json");
  cmd->add_option("model", *model, "a model folder (optional)");
  cmd->add_flag("--json", *json, "machine-readable JSON");
  cmd->callback([model, json, rc] {
    if (!model->empty()) {
      *rc = run_model_info(*model, *json);
      return;
    }
    // cpu_vector_math: how the CPU flow's exp/tanh run (kernels/vec_math.h).
    if (*json)
      std::printf("%s\n", nlohmann::json({{"version", "0.2.0"},
                                          {"cuda_compiled", cuda_compiled()},
                                          {"cuda_device", cuda_available()},
                                          {"cpu_vector_math", vec::isa()}})
                              .dump(2)
                              .c_str());
    else
      std::printf("mirad 0.2.0\ncuda compiled: %s\ncuda device: %s\ncpu vector math: %s\n",
                  cuda_compiled() ? "yes" : "no", cuda_available() ? "yes" : "no", vec::isa());
    *rc = 0;
  });
}

}  // namespace mirad::cli
