// `mirad clean`: a training run whose result is the cleaning result (engine/detector/
// clean_result.h) with heatmap evidence, the model trained without the rejected images, and
// optionally the kept images exported; the dataset is never modified.
#include "tools/cli/clean.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <set>

#include "core/error.h"
#include "engine/detector/clean_result.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/output_dir.h"
#include "host/feature_extractor.h"
#include "host/heatmap.h"
#include "host/image.h"
#include "host/predictor.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/subcommand.h"
#include "tools/cli/training_run.h"

namespace mirad::cli {

namespace fs = std::filesystem;

namespace {

struct CleanOptions {
  DataOptions data;
  RunOptions run;
  std::string out, keep, reject, export_dir;
  bool hardlink = false, no_heatmaps = false;
};

// clean --out: clean.json (its marker), rejected.csv, heatmaps/*.png and the model/ folder.
OutputKind clean_output_kind() {
  const OutputKind model = model_output_kind();
  auto owns = [model](const fs::path& rel, bool is_dir) {
    const fs::path top = *rel.begin();
    if (rel == top) return top == "heatmaps" || top == "model" ? is_dir
                           : !is_dir && (top == "clean.json" || top == "rejected.csv");
    if (top == "heatmaps") return !is_dir && rel.parent_path() == top && rel.extension() == ".png";
    return top == "model" && model.owns(rel.lexically_relative(top), is_dir);
  };
  return {"a mirad clean output (clean.json)", is_clean_result, owns};
}

// --export: the kept images and nothing else, so it goes into a new or empty folder only (a
// rerun cannot tell its earlier export from a person's files there).
OutputKind export_kind() {
  return {"a new or empty folder (--export writes exactly the kept images)",
          [](const fs::path&) { return false; }, [](const fs::path&, bool) { return false; }};
}

int run_clean(const CleanOptions& o) {
  const fs::path out(o.out);
  refuse_overlapping_outputs(
      {{"--out", o.out}, {"--export", o.export_dir}, {"--checkpoint", o.run.checkpoint}});
  check_replaceable(out, clean_output_kind(), "--out");
  if (!o.export_dir.empty()) check_replaceable(o.export_dir, export_kind(), "--export");
  // They go into clean.json: a name JSON cannot hold must fail now, not after the work.
  require_utf8_path(o.data.data, "--data");
  require_utf8_path(o.export_dir, "--export");
  std::vector<fs::path> outputs{out};
  if (!o.export_dir.empty()) outputs.push_back(o.export_dir);
  // run_training refuses outputs inside the inputs before any work; only then are the staged
  // folders made (each beside its target, swapped in complete at the end: a signal or a kill
  // never leaves a half output, and a rerun leaves no file of the earlier run behind).
  std::optional<StagedDir> staged, staged_export;
  TrainingRequest req{o.data, o.run, o.keep, o.reject, false, outputs};
  req.prepare_outputs = [&] {
    create_parent_folders(out, "--out");
    staged.emplace(out, clean_output_kind(), "--out");
    if (!o.export_dir.empty()) {
      create_parent_folders(o.export_dir, "--export");
      staged_export.emplace(o.export_dir, export_kind(), "--export");
    }
  };
  const TrainingRun run = run_training(req);
  const fs::path work = staged->path();
  std::error_code ec;
  const auto& rr = run.result.refinement;
  const auto& imgs = run.result.bank_images;
  fs::create_directory(work / "model", ec);
  CHECK_INPUT(!ec, "--out {}: cannot create model/ ({})", printable(o.out), ec.message());
  write_detector_files(work / "model", run.result.model);

  // Evidence: each rejected image's anomaly map under the detector trained without it, from
  // the job's own features (the backbone never runs twice on one image within a job).
  std::vector<std::string> heatmap_of(imgs.size());
  if (!o.no_heatmaps && !rr.rejected.empty()) {
    fs::create_directories(work / "heatmaps", ec);
    CHECK_INPUT(!ec, "--out {}: cannot create heatmaps/ ({})", printable(o.out), ec.message());
    Predictor pred(run.result.model, parse_device(run.config.device), o.run.threads);
    const Features& features = *run.result.features;
    std::vector<int64_t> rows;
    std::vector<fs::path> paths;
    for (const auto& r : rr.rejected) {
      rows.push_back(features.usable[r.image]);  // refinement ids index the usable rows
      paths.push_back(imgs[r.image]);
    }
    JobBar bar(!o.run.json);
    const auto preds = pred.predict_features(features, rows, paths, true, bar.callback());
    for (size_t i = 0; i < preds.size(); ++i) {
      if (!preds[i].error.empty() || preds[i].map.empty()) continue;
      Image img = decode_image(preds[i].path);
      Image over = heatmap_overlay(img, preds[i].map.data(), preds[i].height, preds[i].width,
                                   run.result.model.stats.map_lo, run.result.model.stats.map_hi);
      const std::string name = fmt::format("{:04d}_{}.png", i, preds[i].path.stem().string());
      encode_png(work / "heatmaps" / name, over, false);
      heatmap_of[rr.rejected[i].image] = (fs::path("heatmaps") / name).string();
    }
  }
  const std::set<std::string> bad(run.contaminated.begin(), run.contaminated.end());
  CleanResult result;
  result.data = o.data.data;
  result.layout = run.data.dataset.layout;
  result.images = int64_t(imgs.size());
  result.retained = int64_t(rr.retained.size());
  result.cleaning = cleaning_figures(run);
  for (const auto& r : rr.rejected) {
    CleanRejection e{imgs[r.image].string(), r.score, r.round, r.tau};
    if (run.config.refine.soft) e.weight = r.weight;
    e.heatmap = heatmap_of[r.image];
    if (!bad.empty() || result.cleaning) e.truly_defective = bad.count(path_key(imgs[r.image])) > 0;
    result.rejected.push_back(std::move(e));
  }
  for (const auto& s : run.result.skipped)
    result.skipped.push_back({run.data.dataset.train[s.index].path.string(), s.message});
  for (int64_t b : rr.flagged) result.nonfinite_loss_images.push_back(imgs[b].string());
  result.stop_reason = rr.stop_reason;
  result.rounds = summarize_rounds(rr.rounds);
  result.config = run.config;
  result.seconds = run.seconds;
  result.feature_seconds = run.result.feature_seconds;
  result.refine_seconds = run.result.refine_seconds;
  // Kept images as copies (hardlinks only on request: they share the source's inode, so
  // editing one edits the dataset).
  if (!o.export_dir.empty()) {
    const fs::path dst = staged_export->path();
    if (o.hardlink)
      std::fprintf(stderr, "mirad: warning: --hardlink: exported files share their inode with "
                           "the dataset; editing one edits the other\n");
    const fs::path root = run.data.dataset.root;
    for (int64_t b : rr.retained) {
      const fs::path src = imgs[b];
      fs::path rel = src.lexically_relative(root);
      if (rel.empty() || rel.native().starts_with("..")) rel = src.filename();
      const fs::path target = dst / rel;
      fs::create_directories(target.parent_path(), ec);
      CHECK_INPUT(!ec, "--export: cannot create the folder {} ({})",
                  printable(target.parent_path().string()), ec.message());
      check_output_file(target);
      if (o.hardlink) {
        fs::create_hard_link(src, target, ec);
        CHECK_INPUT(!ec, "--export: cannot hardlink {}: {}", printable(target.string()), ec.message());
      } else {
        write_file_atomic(target, read_file_bytes(src), false);
      }
    }
    result.exported = CleanExport{o.export_dir, int64_t(rr.retained.size()), o.hardlink};
  }
  write_clean_result(work, result);
  // The export first: clean.json in place is what says the run finished.
  if (staged_export) staged_export->commit();
  staged->commit();
  if (!o.run.checkpoint.empty()) remove_refine_checkpoint(o.run.checkpoint);
  if (o.run.json) {
    // Every backbone pass of the command (training features and heatmaps alike), on stdout
    // only: clean.json's bytes stay those of earlier runs.
    nlohmann::json j = to_json(result);
    j["backbone_passes"] = backbone_passes_in_process();
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  print_rounds(run);
  print_skipped(run);
  for (const auto& r : rr.rejected)
    std::printf("rejected: %s (score %.3f, round %d)%s\n",
                printable(imgs[r.image].string()).c_str(), r.score, r.round,
                bad.count(path_key(imgs[r.image])) ? " [defective]" : "");
  if (const auto& c = result.cleaning)
    std::printf("cleaning: %lld contaminated, %lld rejected: precision %.3f, recall %.3f, F1 "
                "%.3f\n", (long long)c->contaminated, (long long)c->rejected, c->counts.precision,
                c->counts.recall, c->counts.f1);
  std::printf("kept %zu of %zu images in %.1f s -> %s (clean.json, rejected.csv, heatmaps/, "
              "model/)\n", rr.retained.size(), imgs.size(), run.seconds, o.out.c_str());
  return 0;
}

}  // namespace

void add_clean_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<CleanOptions>(
      app, "clean",
      "Find the defective images hidden in a training set: clean.json, rejected.csv "
      "with heatmap evidence, and the detector trained without them",
      "Examples:\n"
      "  mirad clean --data photos/ --out cleaned/\n"
      "  mirad clean --data ds --layout mvtec --export kept/ --out cleaned/\n"
      "  mirad clean --data ds --keep reviewed_ok.txt --reject reviewed_bad.txt --out run2/",
      rc, run_clean);
  add_training_options(cmd, o->data, o->run, o->keep, o->reject);
  cmd->add_option("--out,-o", o->out, "output folder (created; never inside the dataset)")
      ->required()->check(NonEmpty());
  cmd->add_option("--export", o->export_dir, "also copy the kept images into this folder")
      ->check(NonEmpty());
  cmd->add_flag("--hardlink", o->hardlink, "--export as hardlinks (shares the inode with the "
                                           "dataset)");
  cmd->add_flag("--no-heatmaps", o->no_heatmaps, "skip the evidence heatmaps");
}

}  // namespace mirad::cli
