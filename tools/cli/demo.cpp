// `mirad demo`: the whole product on a built-in default. Generates a small MVTec-layout
// category (real Debian textures when fetched, procedural otherwise), contaminates its
// training set at 10% with defective test images (SoftPatch's protocol), cleans and trains
// with the default configuration, and reports the rejected files (how many truly defective)
// and image / pixel AUROC of a detector trained without refinement and of the refined one.
#include "tools/cli/demo.h"

#include <stdlib.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "engine/io/json_number.h"
#include "host/contamination.h"
#include "host/dataset.h"
#include "host/predictor.h"
#include "host/thread_budget.h"
#include "host/train_job.h"
#include "host/evaluation.h"
#include "tools/synth/synth.h"
#include "host/thread_pool.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/subcommand.h"
#include "tools/cli/job_common.h"

namespace mirad::cli {

namespace fs = std::filesystem;

namespace {

struct DemoOptions {
  std::string device = "cpu", category = "wood", keep;
  double contamination = 0.1;
  int64_t n_train = 80, size = 256;
  bool procedural = false;
  uint64_t seed = 0;
  int threads = 0;
  std::vector<std::string> set;  // key.path=value config overrides, as train's --set
  bool json = false;
};

// A temporary folder removed on exit, unless the user asked to keep the data.
struct WorkDir {
  fs::path path;
  bool keep = false;
  ~WorkDir() {
    std::error_code ec;
    if (!keep && !path.empty()) fs::remove_all(path, ec);
  }
};

int run_demo(const DemoOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  WorkDir work;
  if (!o.keep.empty()) {
    work.path = o.keep, work.keep = true;
    std::error_code ec;
    fs::create_directories(work.path, ec);
    std::error_code dir_ec;
    CHECK_INPUT(fs::is_directory(work.path, dir_ec), "--keep {}: cannot create the folder ({})",
                o.keep, ec ? ec.message() : std::string("not a folder"));
  } else {
    std::string tmpl = (fs::temp_directory_path() / "mirad_demo_XXXXXX").string();
    CHECK_INPUT(::mkdtemp(tmpl.data()) != nullptr, "demo: cannot create a temporary folder {} "
                "({})", tmpl, std::strerror(errno));
    work.path = tmpl;
  }
  const int cores = apply_thread_budget(o.threads);
  JobBar bar(!o.json);
  auto progress = bar.callback();

  // 1. A small category.
  synth::SynthOptions so;
  so.out = work.path / "synth";
  so.categories = {o.category};
  so.n_train = int(o.n_train);
  so.n_test_good = 20;
  so.n_test_defect = 6;
  so.seed = o.seed;
  so.size = int(o.size);
  so.procedural = o.procedural;
  ThreadPool pool(cores);
  const auto summary = synth::generate(so, pool, [&](int64_t done, int64_t total, const std::string&) {
    progress("generating images", done, total, NAN);
  });
  const auto& cat = summary.categories.at(0);
  // 2. Contamination: defective test images join training.
  const Dataset clean = load_mvtec(cat.dir);
  ContaminationOptions co;
  co.ratio = o.contamination;
  co.seed = o.seed;
  const auto cont = contaminate(clean, co);
  const Dataset& data = cont.dataset;
  std::set<std::string> bad;
  for (const Item& it : cont.manifest.moved) bad.insert(path_key(it.path));
  // 3. Clean and train (with a no-refinement baseline for comparison).
  TrainJob job;
  for (const Item& it : data.train) job.images.push_back(it.path);
  RunOptions ro;
  ro.set = o.set;
  job.config = load_config(ro);
  job.config.device = o.device;
  job.config.seed = o.seed;
  job.config.features.short_side = o.size;
  job.threads = cores;
  job.baseline = true;
  const TrainResult tr = run_train_job(job, progress);
  // 4. Evaluate both detectors on the test split.
  const Device dev = parse_device(o.device);
  const Predictor before(*tr.baseline, dev, cores), after(tr.model, dev, cores);
  const EvalReport eb = evaluate(before, data.test, {}, false, progress);
  const EvalReport ea = evaluate(after, data.test, {}, false, progress);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const auto& rr = tr.refinement;
  int64_t truly = 0;
  nlohmann::json rejected = nlohmann::json::array();
  for (const auto& r : rr.rejected) {
    const bool is_bad = bad.count(path_key(tr.bank_images[r.image])) > 0;
    truly += is_bad;
    rejected.push_back({{"path", tr.bank_images[r.image].string()}, {"score", json_number(r.score)},
                        {"round", r.round}, {"truly_defective", is_bad}});
  }
  // Per round: what was rejected, how much of it truly defective, and each scored image's
  // score with its truth (the demo knows which images are defective): the data behind a
  // rejection rule's errors.
  nlohmann::json rounds = nlohmann::json::array();
  std::vector<int64_t> round_truly;
  for (const auto& rec : rr.rounds) {
    int64_t hit = 0;
    for (int64_t img : rec.rejected) hit += bad.count(path_key(tr.bank_images[img])) > 0;
    round_truly.push_back(hit);
    nlohmann::json scores = nlohmann::json::array();
    for (size_t j = 0; j < rec.scored.size(); ++j)
      scores.push_back({json_number(rec.scores[j]),
                        bad.count(path_key(tr.bank_images[rec.scored[j]])) > 0});
    rounds.push_back({{"round", rec.round}, {"scored", rec.scored.size()}, {"tau", json_number(rec.tau)},
                      {"rejected", rec.rejected.size()}, {"rejected_truly_defective", hit},
                      {"scores", scores}});
  }
  if (o.json) {
    nlohmann::json j = {
        {"command", "demo"},
        {"category", cat.name},
        {"procedural", cat.procedural},
        {"size", o.size},
        {"train_images", data.train.size()},
        {"contaminated", bad.size()},
        {"rejected", rejected},
        {"rejected_truly_defective", truly},
        {"stop_reason", rr.stop_reason},
        {"rounds", rounds},
        {"before", {{"image_auroc", json_number(eb.all.image_auroc)}, {"pixel_auroc", json_number(eb.all.pixel_auroc)},
                    {"aupro", json_number(eb.all.aupro)}}},
        {"after", {{"image_auroc", json_number(ea.all.image_auroc)}, {"pixel_auroc", json_number(ea.all.pixel_auroc)},
                   {"aupro", json_number(ea.all.aupro)}}},
        {"device", o.device},
        {"threads", cores},
        {"seconds", secs}};
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("mirad demo: category '%s' (%s textures), %zu training images of which %zu are "
              "defective (%.0f%% contamination), %zu test images, on %s with %d threads\n",
              cat.name.c_str(), cat.procedural ? "procedural" : "real", data.train.size(),
              bad.size(), 100.0 * o.contamination, data.test.size(), o.device.c_str(), cores);
  for (size_t i = 0; i < rr.rounds.size(); ++i) {
    const auto& rec = rr.rounds[i];
    std::printf("round %d: tau %.3f, rejected %zu (%lld defective)\n", rec.round, rec.tau,
                rec.rejected.size(), (long long)round_truly[i]);
  }
  std::printf("stopped: %s\n", rr.stop_reason.c_str());
  // Paths relative to the category: file names alone repeat across defect folders.
  for (const auto& r : rr.rejected)
    std::printf("  rejected %-48s score %7.3f%s\n",
                tr.bank_images[r.image].lexically_relative(cat.dir).string().c_str(), r.score,
                bad.count(path_key(tr.bank_images[r.image])) ? "  [defective]" : "  [good]");
  std::printf("rejected %zu images: %lld of them defective, %lld of %zu defective images "
              "missed\n", rr.rejected.size(), (long long)truly,
              (long long)(int64_t(bad.size()) - truly), bad.size());
  std::printf("%-28s %12s %12s %8s\n", "", "image AUROC", "pixel AUROC", "AUPRO");
  std::printf("%-28s %12.4f %12.4f %8.4f\n", "before refinement (all)", eb.all.image_auroc,
              eb.all.pixel_auroc, eb.all.aupro);
  std::printf("%-28s %12.4f %12.4f %8.4f\n", "after refinement", ea.all.image_auroc,
              ea.all.pixel_auroc, ea.all.aupro);
  std::printf("total %.1f s (features %.1f s, refinement %.1f s)%s\n", secs, tr.feature_seconds,
              tr.refine_seconds,
              work.keep ? fmt::format("; data kept in {}", work.path.string()).c_str() : "");
  return 0;
}

}  // namespace

void add_demo_command(CLI::App& app, int* rc) {
  auto [cmd, o] = add_subcommand_running<DemoOptions>(
      app, "demo",
      "Generate a small contaminated category, clean it, train, and compare image and "
      "pixel AUROC before and after refinement",
      "Examples:\n  mirad demo\n  mirad demo --contamination 0.2 --json\n"
      "  mirad demo --device cuda --category carpet --keep /tmp/demo_data",
      rc, run_demo);
  cmd->add_option("--device", o->device, "cpu or cuda")
      ->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  cmd->add_option("--category", o->category, "synth category (mirad synth --list)")
      ->capture_default_str();
  cmd->add_option("--contamination", o->contamination, "contamination ratio r (SoftPatch)")
      ->check(FiniteRange(0.0, 0.5))->capture_default_str();
  cmd->add_option("--train", o->n_train, "good training images generated")
      ->check(IntegerRange(10, 10000))->capture_default_str();
  cmd->add_option("--seed", o->seed, "random seed")->check(Unsigned64())->capture_default_str();
  cmd->add_option("--size", o->size, "image size of the generated category (px)")
      ->check(IntegerRange(64, 1024))->capture_default_str();
  cmd->add_flag("--procedural", o->procedural, "procedural textures even when real ones are "
                                               "fetched");
  cmd->add_option("--threads", o->threads, kThreadsHelp)
      ->check(ThreadCount());
  cmd->add_option("--keep", o->keep, "generate the data into this folder and keep it")
      ->check(NonEmpty());
  cmd->add_option("--set", o->set, "override one config key, as train's --set, e.g. "
                                   "--set refine.max_rounds=3 (repeatable)");
  cmd->add_flag("--json", o->json, "machine-readable JSON on stdout");
}

}  // namespace mirad::cli
