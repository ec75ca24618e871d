// Tests for host/contamination: counts, seeded reproducibility (pinned against an independent
// mt19937_64 implementation), the overlap flag, manifest round trips and refusals.
// Suite names start in lower case so that ctest -R "image|resize|dataset|contamination"
// (a case-sensitive regex) selects them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "host/contamination.h"

#include "mvtec_split.h"
#include "temp_dir.h"
namespace fs = std::filesystem;
using namespace mirad;

namespace {

// A fresh directory per test, named for this suite.
class TempDir : public mirad::test::TempDir {
 public:
  TempDir() : mirad::test::TempDir("mirad_contam") {}
};

// An MVTec-like split in memory (contamination never opens the files): 20 good training
// images; a test split of 10 good and 15 defect images of three types (5 each), with masks.
Dataset make_clean(const fs::path& root = "/data/mvtec/bottle") {
  return mirad::test::mvtec_split(root, {"broken", "contamination", "good", "scratch"});
}

std::vector<const Item*> defects_of(const Dataset& d) {
  std::vector<const Item*> out;
  for (const Item& it : d.test)
    if (it.label == Label::defect) out.push_back(&it);
  return out;
}

bool contains(const std::vector<Item>& items, const Item& x) {
  return std::find(items.begin(), items.end(), x) != items.end();
}

}  // namespace

TEST(contamination, RngIsPinned) {
  // The C++ standard fixes this value ([rand.predef]); distributions it does not fix are not
  // used, so the numbers below hold on every standard library.
  std::mt19937_64 std_default;
  for (int i = 0; i < 9999; ++i) std_default();
  EXPECT_EQ(std_default(), 9981545732273789042ull);
  // Reference values from an independent Python implementation of mt19937_64, uniform_below
  // and the partial Fisher-Yates (written from the algorithm descriptions in contamination.h).
  EXPECT_EQ(sample_without_replacement(20, 5, 42), (std::vector<std::size_t>{6, 0, 1, 2, 9}));
  EXPECT_EQ(sample_without_replacement(15, 5, 7), (std::vector<std::size_t>{0, 5, 3, 9, 2}));
  EXPECT_EQ(sample_without_replacement(15, 5, 42), (std::vector<std::size_t>{6, 11, 14, 9, 3}));
  EXPECT_EQ(sample_without_replacement(1000, 3, 0), (std::vector<std::size_t>{694, 366, 993}));
  // A bound just above 2^63 rejects almost half of all draws: exercises the rejection branch.
  std::mt19937_64 rng(123);
  const uint64_t big = (uint64_t{1} << 63) + 1;
  EXPECT_EQ(uniform_below(rng, big), 1032632488948585962ull);
  EXPECT_EQ(uniform_below(rng, big), 8084933221873407292ull);
  EXPECT_EQ(uniform_below(rng, big), 4359373536036025981ull);
}

TEST(contamination, SamplingIsUniform) {
  // Each of 10 indices should be drawn first ~2000 times in 20000 seeds; 5 sigma is ~200.
  std::vector<int> hits(10, 0);
  for (uint64_t seed = 0; seed < 20000; ++seed) ++hits[sample_without_replacement(10, 1, seed)[0]];
  for (int h : hits) EXPECT_NEAR(h, 2000, 200);
  // Without replacement: all distinct, all in range.
  std::vector<std::size_t> all = sample_without_replacement(50, 50, 9);
  EXPECT_EQ(std::set<std::size_t>(all.begin(), all.end()).size(), 50u);
  EXPECT_EQ(*std::max_element(all.begin(), all.end()), 49u);
}

TEST(contamination, CountFromRatio) {
  EXPECT_EQ(contamination_count(0.25, 20), 5u);
  EXPECT_EQ(contamination_count(0.1, 25), 2u);     // 2.5 floors
  EXPECT_EQ(contamination_count(0.29, 100), 29u);  // 28.999999999999996 in double
  EXPECT_EQ(contamination_count(0.0, 100), 0u);
  EXPECT_THROW(contamination_count(-0.1, 10), InputError);
  EXPECT_THROW(contamination_count(std::numeric_limits<double>::quiet_NaN(), 10), InputError);
}

TEST(contamination, MovesDefectsFromTestToTrain) {
  const Dataset clean = make_clean();
  ContaminationOptions opt;
  opt.ratio = 0.25;
  opt.seed = 42;
  ContaminatedDataset c = contaminate(clean, opt);
  const ContaminationManifest& m = c.manifest;
  ASSERT_EQ(m.moved.size(), 5u);
  EXPECT_EQ(c.dataset.train.size(), 25u);
  EXPECT_EQ(c.dataset.test.size(), 20u);
  EXPECT_EQ(m.train_before, 20u);
  EXPECT_EQ(m.test_before, 25u);
  EXPECT_EQ(m.defects_available, 15u);
  EXPECT_EQ(m.train_after, 25u);
  EXPECT_EQ(m.test_after, 20u);
  EXPECT_EQ(c.dataset.count(c.dataset.train, Label::defect), 5u);
  EXPECT_EQ(c.dataset.count(c.dataset.test, Label::defect), 10u);
  EXPECT_EQ(c.dataset.count(c.dataset.test, Label::good), 10u);

  // Seed 42 draws indices {6, 11, 14, 9, 3} (pinned above) of the 15 defects in path order:
  // broken/003, contamination/001 and /004, scratch/001 and /004.
  std::vector<const Item*> defects = defects_of(clean);
  std::vector<Item> expected;
  for (std::size_t i : {3, 6, 9, 11, 14}) expected.push_back(*defects[i]);
  EXPECT_EQ(m.moved, expected);
  EXPECT_EQ(m.moved[0].path, fs::path("/data/mvtec/bottle/test/broken/003.png"));
  EXPECT_EQ(m.moved[3].path, fs::path("/data/mvtec/bottle/test/scratch/001.png"));
  for (const Item& it : m.moved) {
    EXPECT_TRUE(contains(c.dataset.train, it));  // ground truth kept: label, type, mask
    EXPECT_FALSE(contains(c.dataset.test, it));
    EXPECT_EQ(it.label, Label::defect);
    EXPECT_FALSE(it.mask_path.empty());
  }
  // Train stays sorted, so downstream order does not depend on the draw order.
  EXPECT_TRUE(std::is_sorted(c.dataset.train.begin(), c.dataset.train.end(),
                             [](const Item& a, const Item& b) {
                               return a.path.generic_string() < b.path.generic_string();
                             }));
}

TEST(contamination, SameSeedSameSplitOtherSeedOtherSplit) {
  const Dataset clean = make_clean();
  ContaminationOptions opt;
  opt.ratio = 0.3;
  opt.seed = 7;
  ContaminatedDataset a = contaminate(clean, opt);
  ContaminatedDataset b = contaminate(clean, opt);
  EXPECT_EQ(a.manifest.moved, b.manifest.moved);
  EXPECT_EQ(a.dataset.train, b.dataset.train);
  EXPECT_EQ(a.dataset.test, b.dataset.test);
  opt.seed = 8;
  ContaminatedDataset c = contaminate(clean, opt);
  EXPECT_EQ(c.manifest.moved.size(), 6u);
  EXPECT_NE(a.manifest.moved, c.manifest.moved);
}

TEST(contamination, OverlapKeepsTestIntact) {
  const Dataset clean = make_clean();
  ContaminationOptions opt;
  opt.count = 4;
  opt.seed = 3;
  opt.overlap = true;
  ContaminatedDataset c = contaminate(clean, opt);
  EXPECT_EQ(c.dataset.train.size(), 24u);
  EXPECT_EQ(c.dataset.test, clean.test);
  for (const Item& it : c.manifest.moved) {
    EXPECT_TRUE(contains(c.dataset.train, it));
    EXPECT_TRUE(contains(c.dataset.test, it));
  }
  EXPECT_EQ(c.manifest.requested_count, std::optional<std::size_t>(4));
  EXPECT_DOUBLE_EQ(c.manifest.ratio, 0.2);  // the effective ratio, 4 / 20
  // The same draw as without overlap: the flag changes the test split, not the sample.
  opt.overlap = false;
  EXPECT_EQ(contaminate(clean, opt).manifest.moved, c.manifest.moved);
}

TEST(contamination, RefusesTooFewDefects) {
  const Dataset clean = make_clean();
  ContaminationOptions opt;
  opt.ratio = 0.8;  // 16 of 15 available
  try {
    contaminate(clean, opt);
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("/data/mvtec/bottle"), std::string::npos) << msg;
    EXPECT_NE(msg.find("needs 16 defect images"), std::string::npos) << msg;
    EXPECT_NE(msg.find("only 15"), std::string::npos) << msg;
  }
  opt.ratio = 0.75;  // exactly 15: all of them
  EXPECT_EQ(contaminate(clean, opt).manifest.moved.size(), 15u);
  opt.count = 16;
  EXPECT_THROW(contaminate(clean, opt), InputError);
}

TEST(contamination, ManifestRoundTripReproducesTheSplit) {
  TempDir dir;
  const Dataset clean = make_clean();
  ContaminationOptions opt;
  opt.ratio = 0.35;
  opt.seed = 0xDEADBEEFCAFEF00Dull;  // above 2^63: must survive JSON as unsigned
  ContaminatedDataset c = contaminate(clean, opt);
  const fs::path mp = dir / "manifest.json";
  write_manifest(mp, c.manifest);
  EXPECT_FALSE(mirad::test::has_atomic_write_leftovers(dir.path()));

  ContaminationManifest back = read_manifest(mp);
  EXPECT_EQ(back.seed, opt.seed);
  EXPECT_DOUBLE_EQ(back.ratio, 0.35);
  EXPECT_FALSE(back.requested_count.has_value());
  EXPECT_FALSE(back.overlap);
  EXPECT_EQ(back.layout, "mvtec");
  EXPECT_EQ(back.moved, c.manifest.moved);
  EXPECT_EQ(back.train_after, c.manifest.train_after);
  Dataset again = apply_manifest(clean, back);
  EXPECT_EQ(again.train, c.dataset.train);
  EXPECT_EQ(again.test, c.dataset.test);

  // Paths in the file are relative to the root, so the same manifest applies to a copy of
  // the dataset somewhere else.
  nlohmann::json j = nlohmann::json::parse(std::ifstream(mp));
  EXPECT_EQ(j["counts"]["moved"], 7);
  EXPECT_EQ(j["moved"][0]["path"],
            c.manifest.moved[0].path.lexically_relative(clean.root).generic_string());
  EXPECT_EQ(j["moved"][0]["path"].get<std::string>().rfind("test/", 0), 0u);
  const Dataset moved_clean = make_clean("/mnt/other/bottle");
  Dataset relocated = apply_manifest(moved_clean, back);
  ASSERT_EQ(relocated.train.size(), c.dataset.train.size());
  for (std::size_t i = 0; i < relocated.train.size(); ++i)
    EXPECT_EQ(relocated.train[i].path.lexically_relative("/mnt/other/bottle"),
              c.dataset.train[i].path.lexically_relative("/data/mvtec/bottle"));
}

TEST(contamination, ManifestRefusals) {
  TempDir dir;
  const Dataset clean = make_clean();
  ContaminationOptions opt;
  opt.ratio = 0.1;
  ContaminatedDataset c = contaminate(clean, opt);

  // Made from another dataset: different split sizes.
  Dataset smaller = make_clean();
  smaller.train.pop_back();
  EXPECT_THROW(apply_manifest(smaller, c.manifest), InputError);
  // A moved path that is a good image in this test split.
  ContaminationManifest wrong = c.manifest;
  wrong.moved[0].path = "/data/mvtec/bottle/test/good/003.png";
  try {
    apply_manifest(clean, wrong);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("test/good/003.png, which is not a defect image"),
              std::string::npos)
        << e.what();
  }

  const fs::path bad = dir / "bad.json";
  std::ofstream(bad) << "{\"schema\": \"mirad.contamination\", \"seed\": 1";
  try {
    read_manifest(bad);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find(bad.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("malformed manifest"), std::string::npos) << e.what();
  }
  std::ofstream(bad) << R"({"schema": "mirad.contamination", "schema_version": 99})";
  try {
    read_manifest(bad);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported schema_version 99"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(read_manifest(dir / "absent.json"), InputError);
}
