// Benchmark generator: rendering one sample (crop + defect + camera), writing whole MVTec-layout
// categories with synth.json, and contact sheets.
#include "tools/synth/synth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <system_error>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/output_dir.h"
#include "host/dataset.h"
#include "host/resize.h"
#include "tools/synth/synth_internal.h"
#include "host/thread_pool.h"

namespace mirad::synth {

namespace fs = std::filesystem;
using nlohmann::json;
using namespace detail;

namespace {

constexpr DefectType kDefects[] = {DefectType::scratch, DefectType::crack, DefectType::stain,
                                   DefectType::foreign_patch, DefectType::hole};
constexpr const char* kDefectNames[] = {"scratch", "crack", "stain", "foreign_patch", "hole"};
// A defect that cannot reach its area range in this many draws points at a bug in its
// parameter ranges, not bad luck: every range is met by most draws.
constexpr int kMaxAttempts = 64;

Image to_image(const Canvas& c) {
  Image img(c.height, c.width, 3);
  uint8_t* p = img.u8();
  for (std::size_t i = 0; i < c.rgb.size(); ++i)
    p[i] = static_cast<uint8_t>(std::lround(std::clamp(c.rgb[i], 0.f, 255.f)));
  return img;
}

// A random view of one source: offset, zoom, small rotation and flips, sampled with wrap.
Canvas render_view(const CategoryContext& ctx, Rng& rng, json& params) {
  const CategorySpec& spec = *ctx.spec;
  const int n = ctx.size;
  const int src = rng.uniform_int(0, static_cast<int>(ctx.textures.size()) - 1);
  const Texture& t = ctx.textures[src];
  const double zoom = 1 + rng.uniform(-spec.scale_jitter, spec.scale_jitter);
  const double scale = spec.texel_scale * 256.0 / n / t.prescale * zoom;
  const double rot_deg = rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg);
  const bool flip_h = rng.bernoulli(0.5), flip_v = rng.bernoulli(0.5);
  const double ox = rng.uniform(0, t.pixels.width), oy = rng.uniform(0, t.pixels.height);
  const double cr = std::cos(rot_deg * kPi / 180), sr = std::sin(rot_deg * kPi / 180);
  Canvas c(n, n);
  for (int y = 0; y < n; ++y)
    for (int x = 0; x < n; ++x) {
      double u = x + 0.5 - n / 2.0, v = y + 0.5 - n / 2.0;
      if (flip_h) u = -u;
      if (flip_v) v = -v;
      sample_wrap(t.pixels, ox + scale * (cr * u - sr * v), oy + scale * (sr * u + cr * v),
                  c.px(x, y));
    }
  params = {{"source", t.source.package + ":" + t.source.path}, {"zoom", r4(zoom)},
            {"rotation_deg", r4(rot_deg)}, {"flip_h", flip_h}, {"flip_v", flip_v},
            {"offset", {r4(ox * t.prescale), r4(oy * t.prescale)}}};
  return c;
}

// The camera: exposure and white-balance jitter, a linear illumination gradient, and sensor
// noise. It runs after the defect so that the defect is lit and noisy like its surroundings;
// the noise also keeps good crops of one small source from matching each other exactly.
void apply_camera(Canvas& c, Rng& rng, json& params) {
  const double gain = rng.uniform(0.93, 1.07);
  double wb[3];
  for (double& w : wb) w = rng.uniform(0.985, 1.015);
  const double gx = rng.uniform(-0.07, 0.07), gy = rng.uniform(-0.07, 0.07);
  const double sigma = rng.uniform(0.8, 2.5);
  const double n = c.width;
  for (int y = 0; y < c.height; ++y)
    for (int x = 0; x < c.width; ++x) {
      const double light = gain * (1 + gx * ((x + 0.5) / n - 0.5) + gy * ((y + 0.5) / n - 0.5));
      const double common = sigma * rng.normal();
      float* p = c.px(x, y);
      for (int k = 0; k < 3; ++k)
        p[k] = static_cast<float>(p[k] * light * wb[k] + common + 0.3 * sigma * rng.normal());
    }
  params = {{"gain", r4(gain)}, {"white_balance", {r4(wb[0]), r4(wb[1]), r4(wb[2])}},
            {"gradient", {r4(gx), r4(gy)}}, {"noise_sigma", r4(sigma)}};
}

std::string read_version(const fs::path& package_dir) {
  std::ifstream f(package_dir / "VERSION");
  std::string v;
  std::getline(f, v);
  return v;
}

int digits_for(int n) {
  int d = 3;
  for (int v = 1000; v <= n - 1 && d < 9; v *= 10) ++d;
  return d;
}

// A category folder is ours as a whole when an earlier synth run wrote its synth.json; a
// non-empty folder without one is a person's, refused before any work and left alone. Ours, or
// an empty one, is replaced at the end through engine/io/output_dir.h's staged folder (built
// beside it, renamed into place complete: a failed run, a full disk, leaves no half category
// that its own rerun would refuse as foreign).
OutputKind category_kind() {
  return {"a category written by mirad synth (synth.json)",
          [](const fs::path& dir) {
            std::error_code ec;
            return fs::exists(dir / "synth.json", ec);
          },
          [](const fs::path&, bool) { return true; }};
}

void create_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  CHECK_INPUT(!ec, "{}: cannot create the folder ({})", dir.string(), ec.message());
}

struct Job {
  std::string split;        // "train" or "test"
  const DefectType* defect;  // nullptr: good
  int index;
  std::string image_rel, mask_rel;
  uint64_t seed;
};

}  // namespace

const char* defect_name(DefectType type) { return kDefectNames[static_cast<int>(type)]; }

DefectType parse_defect(std::string_view name) {
  for (int i = 0; i < kNumDefectTypes; ++i)
    if (name == kDefectNames[i]) return kDefects[i];
  throw InputError(fmt::format(
      "unknown defect type '{}' (known: scratch, crack, stain, foreign_patch, hole)", name));
}

std::span<const DefectType> all_defect_types() { return kDefects; }

AreaRange defect_area_range(DefectType type) {
  switch (type) {
    case DefectType::scratch: return {0.0004, 0.02};
    case DefectType::crack: return {0.0008, 0.04};
    case DefectType::stain: return {0.003, 0.12};
    case DefectType::foreign_patch: return {0.003, 0.1};
    case DefectType::hole: return {0.0002, 0.02};
  }
  CHECK_THROW(false);
  return {};
}

Sample render_sample(const CategoryContext& ctx, const DefectType* defect, uint64_t seed) {
  CHECK_THROW(ctx.spec && !ctx.textures.empty());
  const int n = ctx.size;
  Sample s;
  // Separate streams for texture, defect and camera: a defect's parameters do not shift the
  // camera's draws, so the parameters recorded per part stay independent.
  Rng texture_rng(derive_seed(seed, "texture")), defect_rng(derive_seed(seed, "defect")),
      camera_rng(derive_seed(seed, "camera"));
  Canvas canvas = render_view(ctx, texture_rng, s.params["texture"]);
  std::vector<uint8_t> mask(static_cast<std::size_t>(n) * n, 0);
  if (defect) {
    const AreaRange range = defect_area_range(*defect);
    bool done = false;
    for (int attempt = 1; attempt <= kMaxAttempts && !done; ++attempt) {
      Canvas work = canvas;
      std::fill(mask.begin(), mask.end(), 0);
      json p = draw_defect(ctx, *defect, work, mask, defect_rng);
      std::size_t area = 0;
      for (uint8_t m : mask) area += m;
      const double fraction = static_cast<double>(area) / mask.size();
      if (fraction >= range.min_fraction && fraction <= range.max_fraction) {
        p["type"] = defect_name(*defect);
        p["area_fraction"] = r4(fraction * 100) / 100;
        p["attempts"] = attempt;
        s.params["defect"] = std::move(p);
        canvas = std::move(work);
        done = true;
      }
    }
    CHECK_THROW(done);
  }
  apply_camera(canvas, camera_rng, s.params["camera"]);
  s.image = to_image(canvas);
  s.mask = Image(n, n, 1);
  for (std::size_t i = 0; i < mask.size(); ++i) s.mask.u8()[i] = mask[i] ? 255 : 0;
  return s;
}

void validate_options(const SynthOptions& opt) {
  CHECK_INPUT(!opt.out.empty(), "--out: an output folder is required");
  CHECK_INPUT(opt.n_train >= 1 && opt.n_train <= 100000, "--train: {} is not in 1..100000",
              opt.n_train);
  CHECK_INPUT(opt.n_test_good >= 1 && opt.n_test_good <= 100000,
              "--test-good: {} is not in 1..100000", opt.n_test_good);
  CHECK_INPUT(opt.n_test_defect >= 1 && opt.n_test_defect <= 100000,
              "--test-defect: {} is not in 1..100000", opt.n_test_defect);
  // Below 64 px the smallest defects fall under a pixel; above 2048 one image is 50 MB of floats.
  CHECK_INPUT(opt.size >= 64 && opt.size <= 2048, "--size: {} is not in 64..2048", opt.size);
  std::set<std::string> seen;
  for (const auto& name : opt.categories) {
    category_spec(name);  // throws for an unknown name
    CHECK_INPUT(seen.insert(name).second, "--categories: '{}' is listed twice", name);
  }
  std::error_code ec;
  CHECK_INPUT(!fs::exists(opt.out, ec) || fs::is_directory(opt.out, ec),
              "--out: {} exists and is not a folder", opt.out.string());
  // A mistyped --textures would otherwise fall back to procedural textures with only a warning.
  CHECK_INPUT(opt.textures.empty() || fs::is_directory(opt.textures, ec),
              "--textures: {} is not a folder (tools/textures/fetch_textures.sh DIR fills one)",
              opt.textures.string());
}

SynthSummary generate(const SynthOptions& opt, ThreadPool& pool, const ProgressFn& progress) {
  validate_options(opt);
  const fs::path texture_dir = opt.textures.empty() ? default_texture_dir() : opt.textures;
  SynthSummary summary;
  std::vector<std::string> names = opt.categories;
  if (names.empty())
    for (const auto& s : category_specs()) names.push_back(s.name);
  // Everything that can refuse the output folder does so before the first image: a foreign
  // category folder, and an --out that cannot be created (/proc/x) or written (read-only).
  for (const auto& name : names) check_replaceable(opt.out / name, category_kind(), "--out");
  create_dirs(opt.out);
  CHECK_INPUT(::access(opt.out.c_str(), W_OK) == 0, "--out: cannot write into {} ({})",
              opt.out.string(), std::strerror(errno));

  // Every category's sources are loaded, requested or not: they are the donors of the other
  // categories' foreign patches. Each falls back to procedural textures on its own.
  const auto& specs = category_specs();
  std::vector<bool> procedural(specs.size());
  std::vector<std::vector<TextureSource>> sources(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    procedural[i] = opt.procedural || !textures_available(specs[i], texture_dir);
    sources[i] = procedural[i] ? procedural_sources(specs[i].name) : specs[i].sources;
    const bool requested = std::find(names.begin(), names.end(), specs[i].name) != names.end();
    if (procedural[i] && !opt.procedural && requested)
      summary.warnings.push_back(fmt::format(
          "category {}: source textures not found under {} (run "
          "tools/textures/fetch_textures.sh, or pass --textures); using procedural textures",
          specs[i].name, texture_dir.string()));
  }
  std::vector<std::vector<Texture>> library(specs.size());
  pool.parallel_for(specs.size(), [&](std::size_t i) {
    library[i] = load_textures(specs[i], sources[i], texture_dir, opt.size);
  });

  int64_t total = 0, done = 0;
  const int64_t per_category =
      opt.n_train + opt.n_test_good + int64_t(opt.n_test_defect) * kNumDefectTypes;
  total = per_category * static_cast<int64_t>(names.size());
  std::mutex progress_mutex;

  for (const auto& name : names) {
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t ci = 0;
    while (specs[ci].name != name) ++ci;
    CategoryContext ctx;
    ctx.spec = &specs[ci];
    ctx.textures = std::move(library[ci]);
    ctx.size = opt.size;
    ctx.procedural = procedural[ci];
    for (std::size_t j = 0; j < specs.size(); ++j)
      if (j != ci)
        for (const auto& t : library[j]) ctx.donors.push_back(&t);

    const fs::path dir = opt.out / name;
    StagedDir staged(dir, category_kind(), "--out");
    const fs::path work = staged.path();
    {
      const uint64_t category_seed = derive_seed(opt.seed, name);
      std::vector<Job> jobs;
      auto add_jobs = [&](const std::string& split, const DefectType* defect, int count) {
        const std::string cls = defect ? defect_name(*defect) : "good";
        const int w = digits_for(count);
        const uint64_t class_seed = derive_seed(derive_seed(category_seed, split), cls);
        create_dirs(work / split / cls);
        if (defect) create_dirs(work / "ground_truth" / cls);
        for (int i = 0; i < count; ++i) {
          const std::string stem = fmt::format("{:0{}d}", i, w);
          jobs.push_back({split, defect, i, split + "/" + cls + "/" + stem + ".png",
                          defect ? "ground_truth/" + cls + "/" + stem + "_mask.png" : "",
                          derive_seed(class_seed, static_cast<uint64_t>(i))});
        }
      };
      add_jobs("train", nullptr, opt.n_train);
      add_jobs("test", nullptr, opt.n_test_good);
      for (const DefectType& d : kDefects) add_jobs("test", &d, opt.n_test_defect);

      std::vector<json> records(jobs.size());
      pool.parallel_for(jobs.size(), [&](std::size_t j) {
        const Job& job = jobs[j];
        Sample s = render_sample(ctx, job.defect, job.seed);
        // Thousands of small files: fsync each would dominate; the rename keeps them atomic.
        encode_png(work / job.image_rel, s.image, false);
        if (job.defect) encode_png(work / job.mask_rel, s.mask, false);
        json r = {{"file", job.image_rel},
                  {"split", job.split},
                  {"class", job.defect ? defect_name(*job.defect) : "good"}};
        if (job.defect) r["mask"] = job.mask_rel;
        r["params"] = std::move(s.params);
        records[j] = std::move(r);
        if (progress) {
          std::lock_guard lock(progress_mutex);
          progress(++done, total, name);
        }
      });

      json src = json::array();
      for (const auto& t : ctx.textures) {
        json e = {{"package", t.source.package}, {"path", t.source.path}};
        if (t.source.package != "procedural")
          e["package_version"] = read_version(texture_dir / t.source.package);
        src.push_back(std::move(e));
      }
      json ranges = json::object();
      for (const DefectType& d : kDefects)
        ranges[defect_name(d)] = {{"min_area_fraction", defect_area_range(d).min_fraction},
                                  {"max_area_fraction", defect_area_range(d).max_fraction}};
      const json manifest = {{"generator", "mirad synth"},
                             {"schema_version", 1},
                             {"category", name},
                             {"description", specs[ci].description},
                             {"seed", opt.seed},
                             {"size", opt.size},
                             {"procedural", ctx.procedural},
                             {"sources", src},
                             {"counts",
                              {{"train_good", opt.n_train},
                               {"test_good", opt.n_test_good},
                               {"test_per_defect", opt.n_test_defect}}},
                             {"defect_area_ranges", ranges},
                             {"images", records}};
      write_file_atomic(work / "synth.json", manifest.dump(1) + "\n");
      if (opt.contact_sheet) write_contact_sheet(work);
      staged.commit();
    }  // on an error, ~StagedDir removes the unfinished folder: frees what a full disk needs

    CategoryResult r;
    r.name = name;
    r.dir = dir;
    r.procedural = ctx.procedural;
    for (const auto& t : ctx.textures) r.sources.push_back(t.source);
    r.n_train = opt.n_train;
    r.n_test_good = opt.n_test_good;
    r.n_test_defect = opt.n_test_defect * kNumDefectTypes;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    summary.categories.push_back(std::move(r));
    library[ci] = std::move(ctx.textures);  // donors of later categories point into library
  }
  return summary;
}

// ---- contact sheets -----------------------------------------------------------------------

namespace {

void blit(Image& sheet, const Image& tile, int x0, int y0) {
  for (int y = 0; y < tile.height(); ++y)
    for (int x = 0; x < tile.width(); ++x)
      for (int k = 0; k < 3; ++k)
        sheet.u8()[(static_cast<std::size_t>(y0 + y) * sheet.width() + x0 + x) * 3 + k] =
            tile.u8()[(static_cast<std::size_t>(y) * tile.width() + x) * 3 + k];
}

Image load_tile(const fs::path& path, int size) {
  Image img = decode_image(path);
  if (img.width() != size || img.height() != size) img = resize_bilinear(img, size, size);
  return img;
}

// Red on the mask's boundary pixels (set, with an unset 4-neighbour or the image edge).
void outline(Image& img, const Image& mask) {
  const int w = img.width(), h = img.height();
  auto on = [&](int x, int y) {
    return x >= 0 && y >= 0 && x < w && y < h && mask.u8()[static_cast<std::size_t>(y) * w + x] > 127;
  };
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (on(x, y) && (!on(x - 1, y) || !on(x + 1, y) || !on(x, y - 1) || !on(x, y + 1))) {
        uint8_t* p = img.u8() + (static_cast<std::size_t>(y) * w + x) * 3;
        p[0] = 255, p[1] = 0, p[2] = 0;
      }
}

}  // namespace

Image make_contact_sheet(const fs::path& category_dir, int per_row) {
  CHECK_INPUT(per_row >= 2 && per_row % 2 == 0, "contact sheet: per_row {} must be even and >= 2",
              per_row);
  const Dataset d = load_mvtec(category_dir);
  std::map<std::string, std::vector<const Item*>> by_type;
  for (const Item& it : d.test) by_type[it.defect_type].push_back(&it);
  CHECK_INPUT(!d.test.empty(), "{}: no test images for a contact sheet", category_dir.string());
  const int tile = decode_image(d.test.front().path).width();
  // Known defect types first in their fixed order, then any others alphabetically.
  std::vector<std::string> rows{"good"};
  for (const DefectType& t : kDefects)
    if (by_type.count(defect_name(t))) rows.push_back(defect_name(t));
  for (const auto& [type, items] : by_type)
    if (std::find(rows.begin(), rows.end(), type) == rows.end()) rows.push_back(type);
  const int gap = 4;
  Image sheet(static_cast<int>(rows.size()) * (tile + gap) + gap, per_row * (tile + gap) + gap, 3);
  std::fill(sheet.u8(), sheet.u8() + sheet.numel(), uint8_t{48});
  for (std::size_t r = 0; r < rows.size(); ++r) {
    const auto& items = by_type[rows[r]];
    const int y0 = gap + static_cast<int>(r) * (tile + gap);
    if (rows[r] == "good") {
      for (int i = 0; i < per_row && i < static_cast<int>(items.size()); ++i)
        blit(sheet, load_tile(items[i]->path, tile), gap + i * (tile + gap), y0);
      continue;
    }
    for (int i = 0; i < per_row / 2 && i < static_cast<int>(items.size()); ++i) {
      Image img = load_tile(items[i]->path, tile);
      blit(sheet, img, gap + 2 * i * (tile + gap), y0);
      if (!items[i]->mask_path.empty()) {
        Image mask = decode_image(items[i]->mask_path, {.color = ColorMode::gray});
        if (mask.width() != tile || mask.height() != tile) mask = resize_bilinear(mask, tile, tile);
        outline(img, mask);
      }
      blit(sheet, img, gap + (2 * i + 1) * (tile + gap), y0);
    }
  }
  return sheet;
}

void write_contact_sheet(const fs::path& category_dir, int per_row) {
  encode_png(category_dir / "contact_sheet.png", make_contact_sheet(category_dir, per_row));
}

}  // namespace mirad::synth
