// `mirad train`: a detector model from a (contaminated) training set; the dataset is never
// modified.
#include "tools/cli/train.h"

#include <cstdio>
#include <memory>
#include <optional>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/output_dir.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/subcommand.h"
#include "tools/cli/training_run.h"

namespace mirad::cli {

namespace fs = std::filesystem;

namespace {

struct TrainOptions {
  DataOptions data;
  RunOptions run;
  std::string out, keep, reject;
};

int run_train(const TrainOptions& o) {
  refuse_overlapping_outputs({{"--out", o.out}, {"--checkpoint", o.run.checkpoint}});
  check_model_output(o.out);
  if (o.run.json) require_utf8_path(o.out, "--out");  // the JSON summary names it
  TrainingRequest req{o.data, o.run, o.keep, o.reject, false, {o.out}};
  // The model is built in a hidden folder beside --out, made before the training (so an
  // unwritable folder fails now) and swapped in at the end: a kill never leaves half a model.
  std::optional<StagedDir> staged;
  req.prepare_outputs = [&] { staged.emplace(o.out, model_output_kind(), "--out"); };
  const TrainingRun run = run_training(req);
  write_detector_files(staged->path(), run.result.model);
  staged->commit();
  if (!o.run.checkpoint.empty()) remove_refine_checkpoint(o.run.checkpoint);
  const auto& rr = run.result.refinement;
  if (o.run.json) {
    nlohmann::json j = {{"command", "train"},
                        {"model", o.out},
                        {"images", run.result.bank_images.size()},
                        {"skipped", run.result.skipped.size()},
                        {"retained", rr.retained.size()},
                        {"rejected", rr.rejected.size()},
                        {"stop_reason", rr.stop_reason},
                        {"rounds", to_json(summarize_rounds(rr.rounds))},
                        {"resumed_from_round", run.result.resumed_from_round},
                        {"threshold", run.result.model.threshold},
                        {"cleaning", to_json(cleaning_figures(run))},
                        {"seconds", run.seconds},
                        {"feature_seconds", run.result.feature_seconds},
                        {"refine_seconds", run.result.refine_seconds}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  print_rounds(run);
  print_skipped(run);
  std::printf("trained on %zu of %zu images (%zu rejected) in %.1f s (features %.1f s); "
              "threshold %.3f -> %s\n",
              rr.retained.size(), run.result.bank_images.size(), rr.rejected.size(), run.seconds,
              run.result.feature_seconds, run.result.model.threshold, o.out.c_str());
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<TrainOptions>(
      app, "train", "Train a detector on a (contaminated) training set with iterative refinement",
      "Examples:\n"
      "  mirad train --data /data/mvtec/bottle --out bottle.model\n"
      "  mirad train --data ds --contamination ds_r10.json --set refine.rule=mad --out m\n"
      "  mirad train --data ds --features ds.safetensors --config cfg.json --out m --json",
      rc, run_train);
  add_training_options(cmd, o->data, o->run, o->keep, o->reject);
  cmd->add_option("--out,-o", o->out, "model folder to write (replaced atomically if it is a "
                                      "mirad model)")->required()->check(NonEmpty());
}

}  // namespace mirad::cli
