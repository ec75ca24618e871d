// The cleaning-result format (clean.json, rejected.csv): what is written reads back to the same
// result and the same bytes, non-finite numbers included; a file of another kind is refused.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/detector/clean_result.h"
#include "engine/io/file_io.h"
#include "expect_error.h"
#include "temp_dir.h"

using namespace mirad;
using mirad::test::expect_input_error;
using mirad::test::TempDir;

namespace {

CleanResult sample_result() {
  CleanResult r;
  r.data = "/data/wood";
  r.layout = "mvtec";
  r.images = 40, r.retained = 37;
  r.rejected.push_back({"/data/wood/test/hole/002.png", 3.25, 1, 1.5});
  r.rejected.back().heatmap = "heatmaps/0000_002.png";
  r.rejected.back().truly_defective = true;
  r.rejected.push_back({"/data/wood/train/good/a,\"b\".png", INFINITY, 2, NAN});
  r.rejected.back().truly_defective = false;
  r.rejected.push_back({"/data/wood/train/good/007.png", 0.5, 0, 0.25});  // a review
  r.rejected.back().weight = 0.125;
  r.skipped.push_back({"/data/wood/train/good/broken.png", "not a PNG"});
  r.nonfinite_loss_images = {"/data/wood/train/good/nan.png"};
  r.stop_reason = "min_keep";
  r.rounds.push_back({1, 40, 1.5, "iqr k=1.5", 2, 1, false, -12.5, 3.0});
  r.rounds.push_back({2, 38, NAN, "iqr k=1.5", 1, 0, true, NAN, 2.0});
  CleaningFigures c;
  c.contaminated = 8, c.rejected = 3;
  c.counts.tp = 1, c.counts.fp = 2, c.counts.fn = 7;
  c.counts.precision = 1.0 / 3, c.counts.recall = 0.125, c.counts.f1 = 0.18181818;
  c.counts.false_rejection_rate = 2.0 / 32;
  r.cleaning = c;
  r.config.seed = 5;
  r.config.refine.max_rounds = 3;
  r.seconds = 12.5, r.feature_seconds = 2.25, r.refine_seconds = 10;
  r.exported = CleanExport{"/out/kept", 37, false};
  return r;
}

}  // namespace

TEST(CleanResult, RoundTripKeepsEveryFieldAndByte) {
  TempDir dir;
  const CleanResult r = sample_result();
  write_clean_result(dir.path(), r);
  EXPECT_TRUE(is_clean_result(dir.path()));
  const CleanResult back = read_clean_result(dir.path());
  EXPECT_EQ(back.data, r.data);
  EXPECT_EQ(back.layout, "mvtec");
  EXPECT_EQ(back.images, 40);
  EXPECT_EQ(back.retained, 37);
  ASSERT_EQ(back.rejected.size(), 3u);
  EXPECT_EQ(back.rejected[0].heatmap, "heatmaps/0000_002.png");
  EXPECT_EQ(back.rejected[0].truly_defective, std::optional<bool>(true));
  EXPECT_DOUBLE_EQ(back.rejected[0].score, 3.25);
  EXPECT_TRUE(std::isinf(back.rejected[1].score));  // null: the most anomalous
  EXPECT_TRUE(std::isnan(back.rejected[1].tau));
  EXPECT_EQ(rejection_reason(back.rejected[1]), "non-finite score");
  EXPECT_EQ(rejection_reason(back.rejected[2]), "review");
  EXPECT_EQ(back.rejected[2].weight, std::optional<double>(0.125));
  EXPECT_FALSE(back.rejected[0].weight.has_value());
  ASSERT_EQ(back.skipped.size(), 1u);
  EXPECT_EQ(back.skipped[0].error, "not a PNG");
  EXPECT_EQ(back.nonfinite_loss_images, r.nonfinite_loss_images);
  EXPECT_EQ(back.stop_reason, "min_keep");
  ASSERT_EQ(back.rounds.size(), 2u);
  EXPECT_EQ(back.rounds[0].scored, 40);
  EXPECT_EQ(back.rounds[0].nonfinite, 1);
  EXPECT_DOUBLE_EQ(back.rounds[0].train_loss, -12.5);
  EXPECT_TRUE(std::isnan(back.rounds[1].tau));
  EXPECT_TRUE(back.rounds[1].min_keep_reached);
  ASSERT_TRUE(back.cleaning.has_value());
  EXPECT_EQ(back.cleaning->counts.fn, 7);
  EXPECT_DOUBLE_EQ(back.cleaning->counts.recall, 0.125);
  EXPECT_EQ(back.config.seed, 5u);
  EXPECT_EQ(back.config.refine.max_rounds, 3);
  EXPECT_DOUBLE_EQ(back.feature_seconds, 2.25);
  ASSERT_TRUE(back.exported.has_value());
  EXPECT_EQ(back.exported->folder, "/out/kept");
  EXPECT_EQ(back.exported->images, 37);
  // Written again, the result gives the same files byte for byte.
  TempDir again;
  write_clean_result(again.path(), back);
  for (const char* name : {"clean.json", "rejected.csv"})
    EXPECT_EQ(read_file_text(again / name, 1 << 20), read_file_text(dir / name, 1 << 20)) << name;
}

TEST(CleanResult, RejectedCsvQuotesNamesAndSaysInfForNonFiniteScores) {
  const std::string csv = rejected_csv(sample_result());
  EXPECT_EQ(csv,
            "path,score,round,threshold\n"
            "/data/wood/test/hole/002.png,3.25,1,1.5\n"
            "\"/data/wood/train/good/a,\"\"b\"\".png\",inf,2,\n"
            "/data/wood/train/good/007.png,0.5,0,0.25\n");
}

TEST(CleanResult, NoLabelsIsNullCleaningAndNoExportIsNoKey) {
  CleanResult r = sample_result();
  r.cleaning.reset();
  r.exported.reset();
  const nlohmann::json j = to_json(r);
  EXPECT_TRUE(j.at("cleaning").is_null());
  EXPECT_FALSE(j.contains("exported"));
  EXPECT_TRUE(j.at("min_keep_reached").get<bool>());
  const CleanResult back = clean_result_from_json(j, "test");
  EXPECT_FALSE(back.cleaning.has_value());
  EXPECT_FALSE(back.exported.has_value());
}

TEST(CleanResult, OtherDocumentsAreRefused) {
  TempDir dir;
  EXPECT_FALSE(is_clean_result(dir.path()));  // no clean.json
  write_file_atomic(dir / "clean.json", std::string("{\"format\": \"mirad-model\"}"));
  EXPECT_FALSE(is_clean_result(dir.path()));
  expect_input_error([&] { read_clean_result(dir.path()); }, "not a mirad cleaning result");
  nlohmann::json j = to_json(sample_result());
  j["version"] = 2;
  expect_input_error([&] { clean_result_from_json(j, "x"); }, "version 2");
  j = to_json(sample_result());
  j.erase("rounds");
  expect_input_error([&] { clean_result_from_json(j, "x"); }, "malformed cleaning result");
}
