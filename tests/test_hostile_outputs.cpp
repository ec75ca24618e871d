// Issue 13, the second probe's output findings: model folders that held a person's files, a
// model whose backbone.std had a 0, and the staged output folders (engine/io/output_dir.h) that
// keep a killed run from leaving a half output or a temporary forever. The model tests failed
// on the code before the fix; StagedDir is the fix's own interface.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>

#include "engine/detector/detector_model.h"
#include "engine/io/file_io.h"
#include "engine/io/json_io.h"
#include "engine/io/output_dir.h"
#include "expect_error.h"
#include "fuzz/fixtures.h"
#include "temp_dir.h"

namespace fs = std::filesystem;
using namespace mirad;
using mirad::test::expect_input_error;

namespace {

void write_text(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

std::vector<std::string> hidden_entries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().starts_with(".")) out.push_back(e.path().filename().string());
  return out;
}

// A process that stages `target` and dies without cleaning up, as under SIGKILL.
void stage_and_die(const fs::path& target) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    StagedDir staged(target, model_output_kind(), "--out");
    write_text(staged.path() / "config.json", "half");
    ::_exit(0);  // no destructor runs: the temporary stays, as after a kill
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
}

}  // namespace

// Finding 4: `train --out m` over a model folder holding NOTES.txt replaced it whole.
TEST(HostileOutputs, ModelFolderWithOtherFilesIsNotReplaced) {
  test::TempDir tmp;
  save_detector(tmp / "m", fuzz::tiny_model());
  write_text(tmp / "m" / "NOTES.txt", "my notes");
  expect_input_error([&] { check_model_output(tmp / "m"); }, "NOTES.txt",
                     "not part of a mirad model folder");
  expect_input_error([&] { save_detector(tmp / "m", fuzz::tiny_model()); }, "NOTES.txt");
  EXPECT_EQ(read_file_text(tmp / "m" / "NOTES.txt"), "my notes");
  // A subfolder is foreign too, and named.
  fs::remove(tmp / "m" / "NOTES.txt");
  fs::create_directory(tmp / "m" / "old");
  expect_input_error([&] { save_detector(tmp / "m", fuzz::tiny_model()); }, "old");
  fs::remove(tmp / "m" / "old");
  EXPECT_NO_THROW(save_detector(tmp / "m", fuzz::tiny_model()));
  EXPECT_TRUE(hidden_entries(tmp.path()).empty());
}

// Finding 9: a model with backbone.std[0] = 0 loaded, then failed every image.
TEST(HostileOutputs, ModelWithZeroStdIsRefusedAtLoad) {
  test::TempDir tmp;
  save_detector(tmp / "m", fuzz::tiny_model());
  auto j = parse_json_bounded(read_file_text(tmp / "m" / "config.json"), "test");
  j["backbone"]["std"][0] = 0;
  write_file_atomic(tmp / "m" / "config.json", j.dump());
  expect_input_error([&] { load_detector(tmp / "m"); }, "backbone.std[0] is 0");
}

// Finding 10: a killed run's temporary is removed by the next run for the same target; a live
// run's, another target's and a person's look-alike folders are not.
TEST(HostileOutputs, StaleTemporariesOfKilledRunsAreRemoved) {
  test::TempDir tmp;
  stage_and_die(tmp / "m");
  ASSERT_EQ(hidden_entries(tmp.path()).size(), 1u);
  EXPECT_TRUE(hidden_entries(tmp.path())[0].starts_with(".m.mirad-"));
  EXPECT_FALSE(fs::exists(tmp / "m"));  // the target itself is untouched
  fs::create_directory(tmp / ".m.mirad-mine");  // a person's: not the six-character pattern
  write_text(tmp / ".m.mirad-abcdef", "a file");  // a file, not a folder of ours
  fs::create_directory(tmp / ".other.mirad-abcdef");  // another target's
  {
    StagedDir live(tmp / "m", model_output_kind(), "--out");  // holds its lock
    remove_stale_temporaries(tmp / "m");
    EXPECT_TRUE(fs::exists(live.path())) << "a live run's folder was removed";
  }
  save_detector(tmp / "m", fuzz::tiny_model());
  std::vector<std::string> left = hidden_entries(tmp.path());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{".m.mirad-abcdef", ".m.mirad-mine",
                                            ".other.mirad-abcdef"}));
  EXPECT_NO_THROW(load_detector(tmp / "m"));
}

// Finding 8: a staged folder replaces the earlier output as a whole; an uncommitted one leaves
// the earlier output as it was.
TEST(HostileOutputs, StagedFolderReplacesTheWholeOutput) {
  test::TempDir tmp;
  save_detector(tmp / "m", fuzz::tiny_model());
  const std::string before = read_file_text(tmp / "m" / "config.json");
  {
    StagedDir staged(tmp / "m", model_output_kind(), "--out");
    write_text(staged.path() / "config.json", "unfinished");
  }  // not committed: an error (or a signal) before the end
  EXPECT_EQ(read_file_text(tmp / "m" / "config.json"), before);
  EXPECT_TRUE(hidden_entries(tmp.path()).empty());
  auto m = fuzz::tiny_model();
  m.threshold = 7.5;
  StagedDir staged(tmp / "m", model_output_kind(), "--out");
  write_detector_files(staged.path(), m);
  staged.commit();
  EXPECT_EQ(load_detector(tmp / "m").threshold, 7.5);
  EXPECT_TRUE(hidden_entries(tmp.path()).empty());
  // A symlink or a file at the target is never replaced.
  fs::create_symlink(tmp / "m", tmp / "link");
  expect_input_error([&] { StagedDir s(tmp / "link", model_output_kind(), "--out"); },
                     "symbolic link");
  write_text(tmp / "file", "x");
  expect_input_error([&] { StagedDir s(tmp / "file", model_output_kind(), "--out"); },
                     "not a folder");
  // A missing parent fails up front, with the system's reason.
  expect_input_error([&] { StagedDir s(tmp / "nope" / "m", model_output_kind(), "--out"); },
                     "No such file or directory");
}
