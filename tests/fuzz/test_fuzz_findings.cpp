// What the fuzzers (tests/fuzz) found, as plain assertions that fail before each fix in any
// build. The inputs that found them are replayed too (regressions/, fuzz_replay_* tests), which
// under tools/sanitize.sh also catches the undefined behaviour a normal build does not show.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <string>

#include "engine/io/safetensors.h"
#include "engine/detector/refinement.h"
#include "expect_error.h"
#include "fixtures.h"
#include "host/contamination.h"
#include "temp_dir.h"

using namespace mirad;
using mirad::test::expect_input_error;
using mirad::test::TempDir;
namespace fs = std::filesystem;

namespace {

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// The checkpoint.json of the fixture checkpoint with `from` replaced by `to`.
std::string edited_checkpoint(const TempDir& tmp, const std::string& from, const std::string& to) {
  save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
  std::string text = read_text(tmp / "checkpoint.json");
  const auto at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return at == std::string::npos ? text : text.replace(at, from.size(), to);
}

}  // namespace

// fuzz_checkpoint: a checkpoint.json without "tensors_sha256", or with a "format" that is not a
// string, escaped as nlohmann::json exceptions (the CLI's "internal error", exit 3).
TEST(fuzz_findings, CheckpointWithoutDigestOrWithAnOddFormatIsAnInputError) {
  TempDir tmp;
  save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
  write_text(tmp / "checkpoint.json", R"({"format":"mirad-refine-checkpoint","version":1})");
  expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "checkpoint.json",
                     "tensors_sha256");
  write_text(tmp / "checkpoint.json", R"({"format":5,"version":1})");
  expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "is not a version-1");
}

// fuzz_checkpoint: "rounds_done": 1e300 was cast from double to int (undefined behaviour), and
// -1 or 2^40 in an int field wrapped silently.
TEST(fuzz_findings, CheckpointIntegersMustBeIntegersInRange) {
  for (const char* bad : {"1e300", "2.5", "1099511627776", "-2147483649"}) {
    TempDir tmp;
    write_text(tmp / "checkpoint.json",
               edited_checkpoint(tmp, "\"rounds_done\":1", "\"rounds_done\":" + std::string(bad)));
    expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "integer");
  }
  TempDir tmp;
  write_text(tmp / "checkpoint.json",
             edited_checkpoint(tmp, "\"version\":1", "\"version\":1e300"));
  expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "is not a version-1");
}

// A checkpoint whose flow config asks for more parameters than its tensors hold was loaded, and
// the resumed run's flow kernels would index past the end of theta.
TEST(fuzz_findings, CheckpointTensorsMustFitTheirFlows) {
  TempDir tmp;
  write_text(tmp / "checkpoint.json", edited_checkpoint(tmp, "\"dim\":4", "\"dim\":6"));
  expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "theta0", "expected");
  // The fixture itself still loads, and to what was saved.
  TempDir ok;
  save_refine_checkpoint(ok.path(), fuzz::tiny_checkpoint());
  const auto c = load_refine_checkpoint(ok.path());
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->last_model.taps.at(1).theta, fuzz::tiny_checkpoint().last_model.taps.at(1).theta);
}

// fuzz_manifest: a manifest's "ratio": 1e300 reached a double -> size_t cast in
// contamination_count through check_manifest (undefined behaviour; in practice a wrapped count).
TEST(fuzz_findings, HugeContaminationRatioIsAnInputError) {
  expect_input_error([] { (void)contamination_count(1e300, 10); }, "ratio", "images");
  EXPECT_EQ(contamination_count(0.29, 100), 29u);
  const Dataset clean = fuzz::fixture_dataset("/nonexistent/wood");
  ContaminationManifest m = contaminate(clean, {0.3, std::nullopt, 1, false}).manifest;
  m.ratio = 1e300;
  expect_input_error([&] { check_manifest(clean, m); }, "ratio");
}

// fuzz_safetensors: a zero-size tensor (shape [0, 5]) memcpy'd to/from an empty vector's null
// data() (undefined behaviour; UBSan reports it under tools/sanitize.sh). Here: it loads and
// round-trips.
TEST(fuzz_findings, ZeroSizeTensorsLoadAndRoundTrip) {
  const std::string header = R"({"z":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]}})";
  std::vector<uint8_t> file(8 + header.size());
  const uint64_t n = header.size();
  std::memcpy(file.data(), &n, 8);
  std::memcpy(file.data() + 8, header.data(), header.size());
  const SafeTensors st = parse_safetensors(file, "zero.safetensors");
  EXPECT_EQ(st.at("z").shape, (std::vector<int64_t>{0, 5}));
  EXPECT_TRUE(st.at("z").data.empty());
  const SafeTensors back = parse_safetensors(serialize_safetensors(st.tensors()), "again");
  EXPECT_EQ(back.at("z").shape, (std::vector<int64_t>{0, 5}));
}
