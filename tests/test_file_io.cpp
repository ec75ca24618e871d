// Atomic writes and the input-protection rule: outputs replace whole files via a unique temp
// file, never follow planted links, and never land on or inside the inputs.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "engine/io/file_io.h"
#include "temp_dir.h"

using namespace mirad;
namespace fs = std::filesystem;

namespace {
std::string slurp(const fs::path& p) {
  std::ifstream in(p);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
}  // namespace

TEST(file_io, AtomicWriteReplacesAndLeavesNoTemp) {
  test::TempDir dir("mirad_fileio");
  write_file_atomic(dir / "out.json", std::string_view("first"));
  write_file_atomic(dir / "out.json", std::string_view("second, longer"));
  EXPECT_EQ(slurp(dir / "out.json"), "second, longer");
  EXPECT_FALSE(test::has_atomic_write_leftovers(dir.path()));
}

TEST(file_io, AtomicWriteDoesNotFollowAPlantedTempLink) {
  test::TempDir dir("mirad_fileio");
  std::ofstream(dir / "precious.txt") << "keep me";
  fs::create_symlink(dir / "precious.txt", dir / "out.json.tmp");
  write_file_atomic(dir / "out.json", std::string_view("{}"));
  EXPECT_EQ(slurp(dir / "precious.txt"), "keep me");
  EXPECT_EQ(slurp(dir / "out.json"), "{}");
}

TEST(file_io, AtomicWriteIntoAMissingFolderIsAClearError) {
  test::TempDir dir("mirad_fileio");
  try {
    write_file_atomic(dir / "no" / "such" / "out.json", std::string_view("{}"));
    FAIL() << "wrote into a missing folder";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("out.json"), std::string::npos) << e.what();
  }
}

TEST(file_io, OutputsNeverOverwriteInputs) {
  test::TempDir dir("mirad_fileio");
  fs::create_directories(dir / "data" / "train");
  std::ofstream(dir / "data" / "train" / "a.png") << "png";
  std::ofstream(dir / "list.txt") << "data/train/a.png\n";
  const std::vector<fs::path> inputs = {dir / "data", dir / "list.txt"};
  EXPECT_THROW(refuse_overwriting_inputs(dir / "data" / "train" / "a.png", inputs), InputError);
  EXPECT_THROW(refuse_overwriting_inputs(dir / "data" / "new.json", inputs), InputError);
  EXPECT_THROW(refuse_overwriting_inputs(dir / "data" / "train" / ".." / "x.json", inputs),
               InputError);
  EXPECT_THROW(refuse_overwriting_inputs(dir / "list.txt", inputs), InputError);
  EXPECT_NO_THROW(refuse_overwriting_inputs(dir / "out.json", inputs));
  EXPECT_NO_THROW(refuse_overwriting_inputs(dir / "data_features.safetensors", inputs));
  // A file input protects only itself, not its folder.
  EXPECT_NO_THROW(refuse_overwriting_inputs(dir / "data" / "train" / "b.json",
                                            {dir / "data" / "train" / "a.png"}));
}
