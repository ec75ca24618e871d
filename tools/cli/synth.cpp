// `mirad synth`: writes MVTec-AD-layout benchmark categories from real or procedural textures
// with synthetic defects, optionally with contact sheets and the patch-kNN difficulty check.
#include "tools/cli/synth.h"

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "host/dataset.h"
#include "tools/synth/synth.h"
#include "tools/synth/synth_baseline.h"
#include "host/thread_pool.h"
#include "tools/cli/cli_checks.h"
#include "tools/cli/progress.h"

namespace mirad::cli {

using nlohmann::json;

void add_synth_command(CLI::App& app, int& rc) {
  // Options are bound by reference and read after parsing; the callback's shared copy of
  // the pointer keeps them alive as long as the App.
  auto holder = std::make_shared<SynthCliOptions>();
  SynthCliOptions& opt = *holder;
  auto* cmd = app.add_subcommand(
      "synth", "Generate MVTec-AD-layout benchmark categories: real photographed textures "
               "(tools/textures/fetch_textures.sh) or procedural ones, with synthetic defects "
               "and masks");
  cmd->add_option("--out", opt.out, "output folder (one sub-folder per category)")
      ->check(NonEmpty());
  cmd->add_option("--categories", opt.categories, "comma-separated category names (default: all)")
      ->delimiter(',');
  cmd->add_option("--train", opt.n_train, "good training images per category")
      ->check(IntegerRange(1, 100000))
      ->capture_default_str();
  cmd->add_option("--test-good", opt.n_test_good, "good test images per category")
      ->check(IntegerRange(1, 100000))
      ->capture_default_str();
  cmd->add_option("--test-defect", opt.n_test_defect, "test images per defect type")
      ->check(IntegerRange(1, 100000))
      ->capture_default_str();
  cmd->add_option("--size", opt.size, "image side in pixels")
      ->check(IntegerRange(64, 2048))
      ->capture_default_str();
  cmd->add_option("--seed", opt.seed, "random seed")->check(Unsigned64())->capture_default_str();
  cmd->add_option("--textures", opt.textures,
                  "texture cache folder (default: $MIRAD_TEXTURES or "
                  "~/.cache/mirad/textures)");
  cmd->add_flag("--procedural", opt.procedural, "use procedural textures for every category");
  cmd->add_flag("--contact-sheet", opt.contact_sheet,
                "also write <category>/contact_sheet.png (good row, then defect pairs with "
                "mask outlines)");
  cmd->add_flag("--baseline", opt.baseline,
                "score each category with the patch nearest-neighbour baseline, report AUROC");
  cmd->add_flag("--list", opt.list, "list the categories and their sources, then exit");
  cmd->add_option("--threads", opt.threads, "worker threads (0 = one per core; at most 4x the cores)")
      ->check(ThreadCount())
      ->capture_default_str();
  cmd->add_flag("--json", opt.json, "machine-readable JSON on stdout, no progress bar");
  cmd->callback([&rc, holder] { rc = run_synth(*holder); });
}

namespace {

int list_categories(const SynthCliOptions& opt) {
  json out = json::array();
  for (const auto& s : synth::category_specs()) {
    json src = json::array();
    for (const auto& t : s.sources) src.push_back(t.package + ":" + t.path);
    out.push_back({{"name", s.name}, {"description", s.description}, {"sources", src}});
    if (!opt.json) {
      std::printf("%-17s %s\n", s.name.c_str(), s.description.c_str());
      for (const auto& t : s.sources)
        std::printf("%-17s   %s: %s\n", "", t.package.c_str(), t.path.c_str());
    }
  }
  if (opt.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace

int run_synth(const SynthCliOptions& opt) {
  if (opt.list) return list_categories(opt);
  CHECK_INPUT(!opt.out.empty(), "synth: --out is required (the folder to write categories to)");
  synth::SynthOptions so;
  so.out = opt.out;
  so.categories = opt.categories;
  so.n_train = opt.n_train;
  so.n_test_good = opt.n_test_good;
  so.n_test_defect = opt.n_test_defect;
  so.size = opt.size;
  so.seed = opt.seed;
  so.textures = opt.textures;
  so.procedural = opt.procedural;
  so.contact_sheet = opt.contact_sheet;
  synth::validate_options(so);

  const int64_t n_categories = so.categories.empty()
                                   ? static_cast<int64_t>(synth::category_specs().size())
                                   : static_cast<int64_t>(so.categories.size());
  const int64_t total =
      n_categories * (so.n_train + so.n_test_good + int64_t(so.n_test_defect) * synth::kNumDefectTypes);
  ThreadPool pool(opt.threads);
  synth::SynthSummary summary;
  {
    JobBar bar(!opt.json);
    const JobProgress draw = bar.callback();
    summary = synth::generate(so, pool, [&](int64_t done, int64_t, const std::string& category) {
      draw("synth " + category, done, total, NAN);
    });
  }
  for (const auto& w : summary.warnings) std::fprintf(stderr, "mirad: warning: %s\n", w.c_str());

  json out = {{"out", so.out.string()}, {"seed", so.seed}, {"size", so.size},
              {"warnings", summary.warnings}, {"categories", json::array()}};
  for (const auto& c : summary.categories) {
    json src = json::array();
    for (const auto& t : c.sources) src.push_back(t.package + ":" + t.path);
    json entry = {{"name", c.name},           {"dir", c.dir.string()},
                  {"procedural", c.procedural}, {"sources", src},
                  {"train_good", c.n_train},   {"test_good", c.n_test_good},
                  {"test_defect", c.n_test_defect}, {"seconds", c.seconds}};
    std::string baseline_note;
    if (opt.baseline) {
      const synth::BaselineResult b =
          synth::evaluate_patch_knn(load_mvtec(c.dir), synth::PatchKnnOptions{}, pool);
      entry["baseline"] = {{"method", "patch_knn"},
                           {"image_auroc", b.image_auroc},
                           {"per_defect_auroc", b.per_defect_auroc}};
      baseline_note = fmt::format("  patch-kNN AUROC {:.3f} (", b.image_auroc);
      bool first = true;
      for (const auto& [type, a] : b.per_defect_auroc)
        baseline_note += fmt::format("{}{} {:.3f}", first ? "" : ", ", type, a), first = false;
      baseline_note += ")";
    }
    if (!opt.json)
      std::printf("%-17s %d train, %d good + %d defect test, %s, %.1fs -> %s%s\n", c.name.c_str(),
                  c.n_train, c.n_test_good, c.n_test_defect,
                  c.procedural ? "procedural textures" : "packaged textures", c.seconds,
                  c.dir.string().c_str(), baseline_note.c_str());
    out["categories"].push_back(std::move(entry));
  }
  if (opt.json) std::printf("%s\n", out.dump(2).c_str());
  return 0;
}

}  // namespace mirad::cli
