// Tests of the benchmark generator (mirad synth): determinism, masks, MVTec loading, the
// procedural fallback, option checks, contact sheets, and the patch-kNN baseline's AUROC.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "host/dataset.h"
#include "engine/io/file_io.h"
#include "host/image.h"
#include "tools/synth/synth.h"
#include "tools/synth/synth_baseline.h"
#include "host/thread_pool.h"

namespace fs = std::filesystem;
using namespace mirad;
using namespace mirad::synth;

namespace {

// A fresh folder per test under the system temp folder, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    m_path = fs::temp_directory_path() /
             (std::string("mirad_synth_") + info->test_suite_name() + "_" + info->name() + "_" +
              std::to_string(::getpid()));
    fs::remove_all(m_path);
    fs::create_directories(m_path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(m_path, ec);
  }
  const fs::path& path() const { return m_path; }

 private:
  fs::path m_path;
};

// Small, fast options: procedural textures (CI has no texture packages), 64-px images.
SynthOptions small_options(const fs::path& out, std::vector<std::string> categories = {"concrete"}) {
  SynthOptions o;
  o.out = out;
  o.categories = std::move(categories);
  o.n_train = 4;
  o.n_test_good = 2;
  o.n_test_defect = 3;
  o.size = 64;
  o.seed = 11;
  o.procedural = true;
  return o;
}

// Every regular file under dir, relative path -> bytes.
std::map<std::string, std::vector<uint8_t>> snapshot(const fs::path& dir) {
  std::map<std::string, std::vector<uint8_t>> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).generic_string()] = read_file_bytes(e.path());
  return out;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  return nlohmann::json::parse(f);
}

}  // namespace

TEST(synth_determinism, SameSeedSameBytesWhateverTheThreadCount) {
  TempDir tmp;
  ThreadPool one(1), two(2);
  const auto a = small_options(tmp.path() / "a", {"concrete", "woven_fabric"});
  auto b = a;
  b.out = tmp.path() / "b";
  generate(a, one);
  generate(b, two);
  const auto sa = snapshot(a.out), sb = snapshot(b.out);
  ASSERT_EQ(sa.size(), sb.size());
  // 2 categories x (4 + 2 + 5*3 images + 5*3 masks + synth.json)
  EXPECT_EQ(sa.size(), 2u * (4 + 2 + 15 + 15 + 1));
  for (const auto& [name, bytes] : sa) {
    ASSERT_TRUE(sb.count(name)) << name;
    EXPECT_TRUE(bytes == sb.at(name)) << name << " differs between runs with the same seed";
  }
}

TEST(synth_determinism, DifferentSeedDifferentImages) {
  TempDir tmp;
  ThreadPool pool(2);
  auto a = small_options(tmp.path() / "a");
  auto b = a;
  b.out = tmp.path() / "b";
  b.seed = a.seed + 1;
  generate(a, pool);
  generate(b, pool);
  const auto sa = snapshot(a.out), sb = snapshot(b.out);
  int differing = 0, images = 0;
  for (const auto& [name, bytes] : sa)
    if (name.ends_with(".png")) ++images, differing += bytes != sb.at(name);
  EXPECT_EQ(differing, images) << "every image should change with the seed";
}

TEST(synth_determinism, RenderSampleIsAFunctionOfItsSeed) {
  auto textures = load_textures(category_spec("wood"), procedural_sources("wood"), {}, 64);
  auto donors = load_textures(category_spec("tiles"), procedural_sources("tiles"), {}, 64);
  CategoryContext ctx;
  ctx.spec = &category_spec("wood");
  ctx.textures = std::move(textures);
  for (const auto& t : donors) ctx.donors.push_back(&t);
  ctx.size = 64;
  for (DefectType t : all_defect_types()) {
    const Sample s1 = render_sample(ctx, &t, 99), s2 = render_sample(ctx, &t, 99);
    EXPECT_TRUE(encode_png(s1.image) == encode_png(s2.image)) << defect_name(t);
    EXPECT_TRUE(encode_png(s1.mask) == encode_png(s2.mask)) << defect_name(t);
    EXPECT_EQ(s1.params, s2.params);
  }
}

TEST(synth_masks, DefectMasksAreBinaryNonEmptyAndWithinTheirAreaRange) {
  TempDir tmp;
  ThreadPool pool(2);
  auto o = small_options(tmp.path(), {"metal_plate", "carpet"});
  o.n_test_defect = 6;
  o.size = 96;
  generate(o, pool);
  for (const auto& cat : o.categories) {
    for (DefectType t : all_defect_types()) {
      const AreaRange range = defect_area_range(t);
      for (int i = 0; i < o.n_test_defect; ++i) {
        const fs::path p = tmp.path() / cat / "ground_truth" / defect_name(t) /
                           fmt::format("{:03d}_mask.png", i);
        ASSERT_TRUE(fs::exists(p)) << p;
        const Image m = decode_image(p, {.color = ColorMode::gray});
        ASSERT_EQ(m.width(), 96);
        std::size_t on = 0;
        for (std::size_t k = 0; k < m.numel(); ++k) {
          ASSERT_TRUE(m.u8()[k] == 0 || m.u8()[k] == 255) << p << " is not binary";
          on += m.u8()[k] == 255;
        }
        const double fraction = static_cast<double>(on) / m.numel();
        EXPECT_GT(on, 0u) << p;
        EXPECT_GE(fraction, range.min_fraction) << p;
        EXPECT_LE(fraction, range.max_fraction) << p;
      }
    }
    // Good images have no masks at all (MVTec convention), and none lies around.
    EXPECT_FALSE(fs::exists(tmp.path() / cat / "ground_truth" / "good"));
  }
}

TEST(synth_masks, GoodSamplesHaveAllZeroMasks) {
  CategoryContext ctx;
  ctx.spec = &category_spec("tiles");
  ctx.textures = load_textures(*ctx.spec, procedural_sources("tiles"), {}, 64);
  ctx.size = 64;
  for (uint64_t seed = 0; seed < 4; ++seed) {
    const Sample s = render_sample(ctx, nullptr, seed);
    for (std::size_t k = 0; k < s.mask.numel(); ++k) ASSERT_EQ(s.mask.u8()[k], 0);
    EXPECT_FALSE(s.params.contains("defect"));
  }
}

TEST(synth_masks, DefectsChangeThePixelsTheirMaskMarks) {
  // The defect must be in the image where the mask says: the masked pixels differ from a
  // defect-free render of the same seed much more than the unmasked ones do.
  auto donors = load_textures(category_spec("cork"), procedural_sources("cork"), {}, 128);
  CategoryContext ctx;
  ctx.spec = &category_spec("concrete");
  ctx.textures = load_textures(*ctx.spec, procedural_sources("concrete"), {}, 128);
  for (const auto& t : donors) ctx.donors.push_back(&t);
  ctx.size = 128;
  for (DefectType t : all_defect_types()) {
    const Sample good = render_sample(ctx, nullptr, 5), bad = render_sample(ctx, &t, 5);
    double in = 0, out = 0, n_in = 0, n_out = 0;
    for (int i = 0; i < 128 * 128; ++i) {
      double d = 0;
      for (int k = 0; k < 3; ++k) d += std::abs(good.image.u8()[i * 3 + k] - bad.image.u8()[i * 3 + k]);
      if (bad.mask.u8()[i]) in += d, ++n_in;
      else out += d, ++n_out;
    }
    EXPECT_GT(in / n_in, 3 * (out / n_out + 0.5)) << defect_name(t);
  }
}

TEST(synth_layout, LoadsWithTheMvtecLoader) {
  TempDir tmp;
  ThreadPool pool(2);
  const auto o = small_options(tmp.path(), {"tread_plate"});
  generate(o, pool);
  const fs::path dir = tmp.path() / "tread_plate";
  const Dataset d = load_mvtec(dir);
  d.validate(&pool);
  ASSERT_EQ(d.train.size(), 4u);
  for (const Item& it : d.train) {
    EXPECT_EQ(it.label, Label::good);
    EXPECT_TRUE(it.mask_path.empty());
  }
  ASSERT_EQ(d.test.size(), 2u + 5u * 3u);
  std::map<std::string, int> per_type;
  for (const Item& it : d.test) {
    ++per_type[it.defect_type];
    if (it.defect_type == "good") {
      EXPECT_EQ(it.label, Label::good);
      EXPECT_TRUE(it.mask_path.empty());
    } else {
      EXPECT_EQ(it.label, Label::defect);
      EXPECT_EQ(it.mask_path, dir / "ground_truth" / it.defect_type /
                                  (it.path.stem().string() + "_mask.png"));
    }
  }
  EXPECT_EQ(per_type["good"], 2);
  for (DefectType t : all_defect_types()) EXPECT_EQ(per_type[defect_name(t)], 3);

  const auto manifest = read_json(dir / "synth.json");
  EXPECT_EQ(manifest["seed"], 11);
  EXPECT_EQ(manifest["category"], "tread_plate");
  EXPECT_EQ(manifest["procedural"], true);
  EXPECT_EQ(manifest["images"].size(), 4u + 2u + 15u);
  EXPECT_EQ(manifest["sources"][0]["package"], "procedural");
  for (const auto& rec : manifest["images"]) {
    EXPECT_TRUE(fs::exists(dir / rec["file"].get<std::string>()));
    EXPECT_TRUE(rec["params"].contains("texture"));
    EXPECT_TRUE(rec["params"].contains("camera"));
    EXPECT_EQ(rec["params"].contains("defect"), rec["class"] != "good");
  }
}

TEST(synth_layout, RerunReplacesAnEarlierRunsFiles) {
  TempDir tmp;
  ThreadPool pool(2);
  auto o = small_options(tmp.path());
  o.n_train = 5;
  generate(o, pool);
  o.n_train = 3;
  generate(o, pool);
  EXPECT_EQ(load_mvtec(tmp.path() / "concrete").train.size(), 3u);
}

TEST(synth_layout, RefusesToOverwriteAForeignFolder) {
  TempDir tmp;
  ThreadPool pool(1);
  fs::create_directories(tmp.path() / "concrete");
  write_file_atomic(tmp.path() / "concrete" / "keep.txt", std::string_view("mine"));
  EXPECT_THROW(generate(small_options(tmp.path()), pool), InputError);
  EXPECT_TRUE(fs::exists(tmp.path() / "concrete" / "keep.txt"));
}

TEST(synth_layout, ContactSheetHasAGoodRowAndOneRowPerDefectType) {
  TempDir tmp;
  ThreadPool pool(2);
  auto o = small_options(tmp.path());
  o.contact_sheet = true;
  generate(o, pool);
  const Image sheet = decode_image(tmp.path() / "concrete" / "contact_sheet.png");
  const int gap = 4;
  EXPECT_EQ(sheet.width(), 6 * (64 + gap) + gap);
  EXPECT_EQ(sheet.height(), 6 * (64 + gap) + gap);
}

TEST(synth_fallback, MissingTexturesFallBackToProceduralWithAWarning) {
  TempDir tmp;
  ThreadPool pool(2);
  auto o = small_options(tmp.path() / "out", {"wood"});
  o.procedural = false;
  o.textures = tmp.path() / "empty_texture_cache";
  fs::create_directories(o.textures);
  const SynthSummary s = generate(o, pool);
  ASSERT_EQ(s.categories.size(), 1u);
  EXPECT_TRUE(s.categories[0].procedural);
  ASSERT_EQ(s.warnings.size(), 1u);
  EXPECT_NE(s.warnings[0].find("fetch_textures.sh"), std::string::npos);
  EXPECT_EQ(read_json(tmp.path() / "out" / "wood" / "synth.json")["procedural"], true);

  o.procedural = true;  // asked for: no warning
  o.out = tmp.path() / "out2";
  EXPECT_TRUE(generate(o, pool).warnings.empty());
}

TEST(synth_fallback, EveryCategoryHasAProceduralGenerator) {
  for (const auto& spec : category_specs()) {
    const auto sources = procedural_sources(spec.name);
    ASSERT_FALSE(sources.empty()) << spec.name;
    const Canvas c = procedural_texture(spec.name, 0, 64);
    double mean = 0, var = 0;
    for (float v : c.rgb) mean += v;
    mean /= c.rgb.size();
    for (float v : c.rgb) var += (v - mean) * (v - mean);
    // A texture, not a flat fill or a blown-out one.
    EXPECT_GT(std::sqrt(var / c.rgb.size()), 2.0) << spec.name;
    EXPECT_GT(mean, 20.0) << spec.name;
    EXPECT_LT(mean, 240.0) << spec.name;
  }
}

TEST(synth_real_textures, GeneratesFromThePackagesWhenFetched) {
  const fs::path dir = default_texture_dir();
  for (const auto& spec : category_specs())
    if (!textures_available(spec, dir))
      GTEST_SKIP() << "texture packages not found under " << dir
                   << " (run tools/textures/fetch_textures.sh to test the real sources)";
  TempDir tmp;
  ThreadPool pool(2);
  auto o = small_options(tmp.path());
  o.categories = {};
  o.procedural = false;
  o.n_train = 1, o.n_test_good = 1, o.n_test_defect = 1;
  const SynthSummary s = generate(o, pool);
  EXPECT_TRUE(s.warnings.empty());
  for (const auto& c : s.categories) {
    EXPECT_FALSE(c.procedural) << c.name;
    const auto manifest = read_json(c.dir / "synth.json");
    EXPECT_NE(manifest["sources"][0]["package_version"], "") << c.name;
  }
}

TEST(synth_options, RejectsBadArguments) {
  TempDir tmp;
  const auto good = small_options(tmp.path());
  EXPECT_NO_THROW(validate_options(good));
  auto expect_bad = [&](auto change, const char* what) {
    auto o = good;
    change(o);
    EXPECT_THROW(validate_options(o), InputError) << what;
  };
  expect_bad([](SynthOptions& o) { o.out.clear(); }, "no --out");
  expect_bad([](SynthOptions& o) { o.n_train = 0; }, "--train 0");
  expect_bad([](SynthOptions& o) { o.n_test_good = -1; }, "--test-good -1");
  expect_bad([](SynthOptions& o) { o.n_test_defect = 0; }, "--test-defect 0");
  expect_bad([](SynthOptions& o) { o.size = 32; }, "--size 32");
  expect_bad([](SynthOptions& o) { o.size = 4096; }, "--size 4096");
  expect_bad([](SynthOptions& o) { o.categories = {"granite"}; }, "unknown category");
  expect_bad([](SynthOptions& o) { o.categories = {"wood", "wood"}; }, "duplicate category");
  write_file_atomic(tmp.path() / "file", std::string_view("x"));
  expect_bad([&](SynthOptions& o) { o.out = tmp.path() / "file"; }, "--out is a file");
  expect_bad([&](SynthOptions& o) { o.textures = tmp.path() / "missing"; }, "no --textures folder");
  try {
    auto o = good;
    o.categories = {"granite"};
    validate_options(o);
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("known: metal_plate"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_defect("dent"), InputError);
  EXPECT_EQ(parse_defect("foreign_patch"), DefectType::foreign_patch);
}

TEST(synth_auroc, HandComputedCases) {
  auto a = [](std::vector<double> s, std::vector<uint8_t> l) { return auroc(s, l); };
  EXPECT_DOUBLE_EQ(a({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  EXPECT_DOUBLE_EQ(a({0.1, 0.2, 0.8, 0.9}, {1, 1, 0, 0}), 0.0);
  // Positives 0.35 (beats 0.1, loses to 0.4) and 0.8 (beats both): 3 of 4 pairs.
  EXPECT_DOUBLE_EQ(a({0.1, 0.4, 0.35, 0.8}, {0, 0, 1, 1}), 0.75);
  // Ties count one half. Pairs (pos, neg): (1,1) 0.5, (1,2) 0, (2,1) 1, (2,2) 0.5 -> 2/4.
  EXPECT_DOUBLE_EQ(a({1, 1, 2, 2}, {0, 1, 0, 1}), 0.5);
  // Positives 0.5, 0.5 against negatives 0.5, 0.9: each ties once and loses once -> 1/4.
  EXPECT_DOUBLE_EQ(a({0.5, 0.5, 0.5, 0.9}, {0, 1, 1, 0}), 0.25);
  // All scores tied: chance.
  EXPECT_DOUBLE_EQ(a({3, 3, 3, 3, 3}, {1, 0, 0, 1, 0}), 0.5);
  // 3 positives, 2 negatives: pos 2 beats neg 1 and ties neg 2 (1.5); pos 3 beats both (2);
  // pos 1 ties neg 1 (0.5) -> 4 / 6.
  EXPECT_DOUBLE_EQ(a({1, 2, 3, 1, 2}, {1, 1, 1, 0, 0}), 4.0 / 6.0);
  EXPECT_TRUE(std::isnan(a({1, 2}, {0, 0})));
  EXPECT_TRUE(std::isnan(a({1, 2}, {1, 1})));
  EXPECT_THROW(a({1, 2}, {1}), InputError);
  EXPECT_THROW(a({1, NAN}, {1, 0}), InputError);
}

TEST(synth_baseline, PatchFeaturesOfAFlatImage) {
  Image img(64, 48, 3);
  std::fill(img.u8(), img.u8() + img.numel(), uint8_t{51});  // 0.2 on the 0..1 scale
  PatchKnnOptions opt;  // /4 -> 16 x 12, 8-px patches every 4 -> 3 x 2
  int n = 0;
  const auto f = patch_features(img, opt, &n);
  ASSERT_EQ(n, 3 * 2);
  ASSERT_EQ(f.size(), static_cast<std::size_t>(n * feature_dim(opt)));
  for (int p = 0; p < n; ++p) {
    const float* row = f.data() + p * feature_dim(opt);
    for (int i = 0; i < 64; ++i) EXPECT_NEAR(row[i], 0.f, 1e-5);
    EXPECT_NEAR(row[64], 0.2f * 8, 1e-3);  // mean, weighted by the patch side
    EXPECT_NEAR(row[65], 0.f, 1e-3);       // std
  }
}

TEST(synth_baseline, SeparatesAnObviousDefectAndScoresCopiesOfTrainingImagesZero) {
  TempDir tmp;
  ThreadPool pool(2);
  auto o = small_options(tmp.path());
  o.size = 128;
  generate(o, pool);
  Dataset d = load_mvtec(tmp.path() / "concrete");
  // Test set: two training images (distance 0) and two with a white square pasted in.
  std::vector<Item> test;
  for (int i = 0; i < 2; ++i) {
    test.push_back(Item{d.train[i].path, Label::good, "good", {}});
    Image img = decode_image(d.train[i].path);
    for (int y = 40; y < 80; ++y)
      for (int x = 40; x < 80; ++x)
        for (int k = 0; k < 3; ++k) img.u8()[(y * 128 + x) * 3 + k] = 255;
    const fs::path p = tmp.path() / fmt::format("white_{}.png", i);
    encode_png(p, img);
    test.push_back(Item{p, Label::defect, "white", {}});
  }
  d.test = test;
  const BaselineResult r = evaluate_patch_knn(d, PatchKnnOptions{}, pool);
  ASSERT_EQ(r.scores.size(), 4u);
  // Zero up to the float rounding of |q|^2 + |t|^2 - 2 q.t.
  EXPECT_NEAR(r.scores[0], 0.0, 1e-2);
  EXPECT_NEAR(r.scores[2], 0.0, 1e-2);
  EXPECT_GT(r.scores[1], 1.0);
  EXPECT_DOUBLE_EQ(r.image_auroc, 1.0);
  EXPECT_DOUBLE_EQ(r.per_defect_auroc.at("white"), 1.0);
  EXPECT_EQ(r.n_train_patches, 4 * 49);  // 128/4 = 32 -> (32-8)/4+1 = 7 per side
}
