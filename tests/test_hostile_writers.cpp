// Issue 7, writers and manifests: outputs that replaced links, devices or inputs, manifests
// whose --check did not check, names JSON cannot hold, and a failed synth that blocked its own
// retry. Every test here failed on the code before the fix it names.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/safetensors.h"
#include "expect_error.h"
#include "host/contamination.h"
#include "host/dataset.h"
#include "tools/synth/synth.h"
#include "host/thread_pool.h"
#include "mvtec_split.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using namespace mirad;
using mirad::test::expect_input_error;
using nlohmann::json;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// An MVTec-like split in memory (contamination never opens the files): 20 good training
// images, 10 good and 15 defect test images of three types, with masks.
Dataset make_clean(const fs::path& root) {
  return mirad::test::mvtec_split(root, {"broken", "good", "scratch", "stain"});
}

// Writes a manifest of `clean` (seed 7, ratio 0.25: 5 of 15 defects), edits its JSON with
// `edit`, and returns what read_manifest + check_manifest make of it.
void check_edited(const test::TempDir& dir, const Dataset& clean,
                  const std::function<void(json&)>& edit) {
  ContaminationOptions o;
  o.ratio = 0.25;
  o.seed = 7;
  write_manifest(dir / "m.json", contaminate(clean, o).manifest);
  json j = json::parse(slurp(dir / "m.json"));
  edit(j);
  write_text(dir / "edited.json", j.dump(2));
  check_manifest(clean, read_manifest(dir / "edited.json"));
}

synth::SynthOptions small_synth(const fs::path& out) {
  synth::SynthOptions o;
  o.out = out;
  o.categories = {"concrete"};
  o.n_train = 4;
  o.n_test_good = 2;
  o.n_test_defect = 2;
  o.size = 64;
  o.seed = 3;
  o.procedural = true;
  return o;
}

}  // namespace

// ---- bug 2: an existing output that is not a regular file is never replaced -------------------

TEST(hostile_outputs, SymlinkDeviceFifoAndFolderTargetsAreRefused) {
  test::TempDir dir("mirad_hostile");
  write_text(dir / "target.json", "keep");
  fs::create_symlink(dir / "target.json", dir / "link.json");
  expect_input_error([&] { write_file_atomic(dir / "link.json", std::string_view("new")); },
                     "link.json", "symbolic link");
  EXPECT_TRUE(fs::is_symlink(dir / "link.json"));
  EXPECT_EQ(slurp(dir / "target.json"), "keep");
  // The engine's writers go through the same check (models, features).
  expect_input_error([&] { save_safetensors(dir / "link.json", {}); }, "symbolic link");
  EXPECT_TRUE(fs::is_symlink(dir / "link.json"));

  ASSERT_EQ(::mkfifo((dir / "fifo.json").c_str(), 0600), 0);
  expect_input_error([&] { write_file_atomic(dir / "fifo.json", std::string_view("x")); },
                     "fifo.json", "FIFO", "refusing to replace it");
  struct stat st {};
  ASSERT_EQ(::lstat((dir / "fifo.json").c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));

  fs::create_directories(dir / "folder.json");
  expect_input_error([&] { write_file_atomic(dir / "folder.json", std::string_view("x")); },
                     "folder.json", "is a directory");
  // A device node is checked without touching it (the old code renamed over /dev/full).
  expect_input_error([] { check_output_file("/dev/full"); }, "/dev/full", "character device");
  EXPECT_FALSE(test::has_atomic_write_leftovers(dir.path()));
}

// ---- bug 12: an empty or folder-like output path gets a message that says so -------------------

TEST(hostile_outputs, EmptyAndFolderPathsAreNamedAsSuch) {
  expect_input_error([] { write_file_atomic("", std::string_view("x")); }, "empty output path");
  expect_input_error([] { check_output_file("some/dir/"); }, "some/dir/", "names a folder");
  expect_input_error([] { check_output_file("/nonexistent-mirad/out.json"); },
                     "cannot write into the folder /nonexistent-mirad");
}

// ---- bug 1: no output lands on or inside any input, the backbone folder included --------------

TEST(hostile_outputs, OutputsInsideTheBackboneFolderAreRefused) {
  test::TempDir dir("mirad_hostile");
  fs::create_directories(dir / "bb");
  write_text(dir / "bb" / "weights.safetensors", "weights");
  write_text(dir / "img.png", "png");
  const std::vector<fs::path> inputs = {dir / "img.png", dir / "bb"};
  expect_input_error([&] { check_output(dir / "bb" / "weights.safetensors", inputs); },
                     "refusing to write", "bb");
  expect_input_error([&] { check_output(dir / "bb" / "new.safetensors", inputs); },
                     "inside the input folder");
  EXPECT_NO_THROW(check_output(dir / "features.safetensors", inputs));
  EXPECT_EQ(slurp(dir / "bb" / "weights.safetensors"), "weights");
}

// ---- bug 7: --check re-draws the split and validates every field ------------------------------

TEST(hostile_manifest, EditedFieldsNoLongerReproduceTheSplit) {
  test::TempDir dir("mirad_hostile");
  const Dataset clean = make_clean(dir.path());
  EXPECT_NO_THROW(check_edited(dir, clean, [](json&) {}));
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["seed"] = 8; }); },
                     "re-drawing with seed 8");
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["ratio"] = 0.3; }); }, "ratio");
  expect_input_error(
      [&] {
        check_edited(dir, clean, [](json& j) {
          j["requested_count"] = 5;
          j["seed"] = 9;
        });
      },
      "seed 9, count 5");
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["layout"] = "ksdd2"; }); },
                     "the manifest is for the ksdd2 layout");
  expect_input_error(
      [&] {
        check_edited(dir, clean, [](json& j) { j["moved"][0]["mask_path"] = "elsewhere.png"; });
      },
      "moved[0]", "elsewhere.png");
  // A root that names another existing folder is another dataset's manifest; a root that is
  // gone is a moved dataset, checked by relative paths.
  fs::create_directories(dir / "other");
  expect_input_error(
      [&] { check_edited(dir, clean, [&](json& j) { j["root"] = (dir / "other").string(); }); },
      "another folder");
  EXPECT_NO_THROW(check_edited(dir, clean, [](json& j) { j["root"] = "/gone/away"; }));
}

TEST(hostile_manifest, NumbersMustBeWhatTheWriterWrites) {
  test::TempDir dir("mirad_hostile");
  const Dataset clean = make_clean(dir.path());
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["seed"] = -1; }); },
                     "seed must be a non-negative integer below 2^64, got -1");
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["seed"] = 1.5; }); },
                     "seed must be a non-negative integer", "1.5");
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["ratio"] = -0.5; }); },
                     "ratio must be a finite number >= 0");
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["overlap"] = 1; }); },
                     "overlap must be true or false");
  expect_input_error([&] { check_edited(dir, clean, [](json& j) { j["extra"] = 1; }); },
                     "unknown field 'extra'");
  expect_input_error(
      [&] { check_edited(dir, clean, [](json& j) { j["moved"][1]["label"] = "good"; }); },
      "moved[1].label");
  // 2^64 parses as a float; get<size_t>() made it 0, which matched an empty list.
  write_text(dir / "m.json", R"({"schema": "mirad.contamination", "schema_version": 1,
      "layout": "mvtec", "root": "x", "seed": 0, "ratio": 0.0, "requested_count": null,
      "overlap": false, "rng": "mt19937_64, rejection-sampled uniform_below, partial Fisher-Yates over the test split's defect images in path order",
      "counts": {"train_before": 20, "test_before": 25, "defects_available": 15,
                 "moved": 18446744073709551616, "train_after": 20, "test_after": 25},
      "moved": []})");
  expect_input_error([&] { read_manifest(dir / "m.json"); },
                     "counts.moved must be a non-negative integer below 2^64");
}

// ---- bug 12: a NUL byte in a manifest path is refused, and the message shows it ---------------

TEST(hostile_manifest, NulInAPathIsRefusedAndPrintable) {
  test::TempDir dir("mirad_hostile");
  const Dataset clean = make_clean(dir.path());
  try {
    check_edited(dir, clean, [](json& j) {
      j["moved"][0]["path"] = std::string("test/broken/\0evil.png", 21);
    });
    FAIL() << "a NUL byte in a path was accepted";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_EQ(std::strlen(e.what()), what.size()) << "the message holds a NUL byte";
    EXPECT_NE(what.find("moved[0].path contains a NUL byte"), std::string::npos) << what;
    EXPECT_NE(what.find("test/broken/\\x00evil.png"), std::string::npos) << what;
  }
}

// ---- bug 6: a name JSON cannot hold is refused by name, before anything is written ------------

TEST(hostile_manifest, InvalidUtf8NamesAreRefusedBeforeWriting) {
  test::TempDir dir("mirad_hostile");
  Dataset clean = make_clean(dir.path());
  for (Item& it : clean.test)
    if (it.label == Label::defect) it.path = it.path.parent_path() / "bad\xff.png";
  ContaminationOptions o;
  o.count = 1;
  const ContaminatedDataset c = contaminate(clean, o);
  expect_input_error([&] { write_manifest(dir / "m.json", c.manifest); }, "bad\\xff.png",
                     "not valid UTF-8");
  EXPECT_FALSE(fs::exists(dir / "m.json"));
  EXPECT_FALSE(test::has_atomic_write_leftovers(dir.path()));
  EXPECT_TRUE(is_valid_utf8("caf\xc3\xa9"));
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));      // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));  // a surrogate
  EXPECT_EQ(printable(std::string("a\0b\xff", 4)), "a\\x00b\\xff");
}

// ---- bug 8: a failed synth leaves nothing that blocks its retry --------------------------------

TEST(hostile_synth, AFailedRunDoesNotBlockItsRetryNorHarmTheLastGoodRun) {
  test::TempDir dir("mirad_hostile");
  ThreadPool pool(2);
  const auto o = small_synth(dir / "out");
  // Stands for the disk filling up after a few images.
  auto fail_after_3 = [](int64_t done, int64_t, const std::string&) {
    if (done == 3) throw InputError("write failed (No space left on device)");
  };
  EXPECT_THROW(synth::generate(o, pool, fail_after_3), InputError);
  EXPECT_FALSE(fs::exists(dir / "out" / "concrete"));
  EXPECT_FALSE(test::has_atomic_write_leftovers(dir / "out"));  // no .concrete.partial-*
  ASSERT_NO_THROW(synth::generate(o, pool));
  EXPECT_EQ(load_mvtec(dir / "out" / "concrete").train.size(), 4u);
  // The temp folder it was built in was 0700; the category is an ordinary folder.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "out" / "concrete").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0777 & ~mask);
  const std::string json_before = slurp(dir / "out" / "concrete" / "synth.json");

  // A rerun that fails leaves the previous complete category as it was.
  auto bigger = o;
  bigger.n_train = 6;
  EXPECT_THROW(synth::generate(bigger, pool, fail_after_3), InputError);
  EXPECT_EQ(load_mvtec(dir / "out" / "concrete").train.size(), 4u);
  EXPECT_EQ(slurp(dir / "out" / "concrete" / "synth.json"), json_before);
  EXPECT_FALSE(test::has_atomic_write_leftovers(dir / "out"));
  ASSERT_NO_THROW(synth::generate(bigger, pool));
  EXPECT_EQ(load_mvtec(dir / "out" / "concrete").train.size(), 6u);
  EXPECT_FALSE(test::has_atomic_write_leftovers(dir / "out"));
}

// ---- bug 11: an output folder that cannot be made is a user error ------------------------------

TEST(hostile_synth, UncreatableOutputFolderIsAnInputError) {
  ThreadPool pool(1);
  expect_input_error([&] { synth::generate(small_synth("/proc/mirad-x"), pool); }, "/proc/mirad-x",
                     "cannot create the folder");
}
