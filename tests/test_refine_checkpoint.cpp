// Refinement checkpoints on disk against faults and edits (issue 13): a kill between the two
// renames of a save resumes from the last complete round (finding 3); a checkpoint.json whose
// fields contradict each other is refused (findings 1, 14); one run at a time holds a folder
// (finding 6); a killed writer's temporaries go on the next run (finding 10).
#include <fcntl.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "engine/io/file_io.h"
#include "engine/detector/refinement.h"
#include "expect_error.h"
#include "fuzz/fixtures.h"
#include "temp_dir.h"

using namespace mirad;
using mirad::test::expect_input_error;
using mirad::test::TempDir;
namespace fs = std::filesystem;

// Fault injection for this program only: with g_die_after_renames = n > 0, the n-th rename() is
// carried out and then the process ends at once (_exit), as a SIGKILL would end it there.
// libstdc++'s filesystem::rename, which write_file_atomic uses, calls rename().
static int g_die_after_renames = 0;
extern "C" int rename(const char* from, const char* to) {
  const int rc = ::renameat(AT_FDCWD, from, AT_FDCWD, to);
  if (g_die_after_renames > 0 && --g_die_after_renames == 0) _exit(0);
  return rc;
}

namespace {

// A second round after tiny_checkpoint()'s first: nothing more rejected, so the loop is done.
RefineCheckpoint two_rounds() {
  RefineCheckpoint c = fuzz::tiny_checkpoint();
  RoundRecord r;
  r.round = 2;
  r.scored = c.retained;
  r.scores = {0.25, 0.75, 0.5};
  r.tau = 3.0;
  r.rule_detail = "Q3 + 1.5*IQR";
  c.rounds.push_back(r);
  c.rounds_done = 2;
  c.loop_done = true;
  c.stop_reason = "converged";
  c.prev[0].taps[0].theta[0] += 1.0f;  // other tensors, so another tensors file
  return c;
}

// Runs fn in a child process that dies after its n-th rename; true when it died there.
bool killed_after_renames(int n, const std::function<void()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    g_die_after_renames = n;
    try {
      fn();
    } catch (...) {
      _exit(2);
    }
    _exit(1);  // fn finished with fewer renames
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

nlohmann::json read_json(const fs::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}
void write_json(const fs::path& p, const nlohmann::json& j) { std::ofstream(p) << j.dump(); }

// Saves tiny_checkpoint(), applies `edit` to its checkpoint.json, and expects the load refused.
void expect_edit_refused(const std::function<void(nlohmann::json&)>& edit,
                         const std::string& fragment) {
  TempDir tmp;
  save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
  nlohmann::json j = read_json(tmp / "checkpoint.json");
  edit(j);
  write_json(tmp / "checkpoint.json", j);
  expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "inconsistent", fragment);
}

}  // namespace

TEST(CheckpointGenerations, KillBetweenTheTwoRenamesResumesFromThePreviousRound) {
  TempDir tmp;
  save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
  // The tensors of round 2 are in place, its JSON is not: the probe's "do not belong together;
  // remove the folder" lost every finished round.
  ASSERT_TRUE(killed_after_renames(1, [&] { save_refine_checkpoint(tmp.path(), two_rounds()); }));
  std::optional<RefineCheckpoint> back;
  ASSERT_NO_THROW(back = load_refine_checkpoint(tmp.path()));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->rounds_done, 1);
  EXPECT_EQ(back->prev[0].taps[0].theta, fuzz::tiny_checkpoint().prev[0].taps[0].theta);
}

TEST(CheckpointGenerations, EveryKillPointLeavesACompletePair) {
  for (int n = 1; n <= 2; ++n) {
    TempDir tmp;
    save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
    ASSERT_TRUE(killed_after_renames(n, [&] { save_refine_checkpoint(tmp.path(), two_rounds()); }))
        << "a save makes at least " << n << " renames";
    std::optional<RefineCheckpoint> back;
    ASSERT_NO_THROW(back = load_refine_checkpoint(tmp.path())) << "killed after rename " << n;
    EXPECT_EQ(back->rounds_done, n == 1 ? 1 : 2) << "killed after rename " << n;
  }
}

TEST(CheckpointGenerations, ACompleteSaveKeepsOnlyItsOwnTensors) {
  TempDir tmp;
  save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
  save_refine_checkpoint(tmp.path(), two_rounds());
  EXPECT_EQ(load_refine_checkpoint(tmp.path())->rounds_done, 2);
  int files = 0;
  for (const auto& e : fs::directory_iterator(tmp.path())) ++files, (void)e;
  EXPECT_EQ(files, 2) << "checkpoint.json and one tensors file";
  remove_refine_checkpoint(tmp.path());
  EXPECT_FALSE(fs::exists(tmp.path()));
}

TEST(CheckpointGenerations, ATensorsFileNameOutsideTheFolderIsRefused) {
  TempDir tmp;
  save_refine_checkpoint(tmp.path(), fuzz::tiny_checkpoint());
  nlohmann::json j = read_json(tmp / "checkpoint.json");
  j["tensors_file"] = "../flow.safetensors";
  write_json(tmp / "checkpoint.json", j);
  expect_input_error([&] { load_refine_checkpoint(tmp.path()); }, "not one of mirad's");
}

TEST(CheckpointConsistency, EditedFieldsAreRefused) {
  expect_edit_refused([](auto& j) { j["retained"] = {0, 1, 1}; }, "retained images");
  expect_edit_refused([](auto& j) { j["retained"] = {0, 1, 2, 3}; }, "both retained and rejected");
  expect_edit_refused([](auto& j) { j["rejected"].push_back(j["rejected"][0]); },
                      "rejected twice");
  expect_edit_refused([](auto& j) { j["rounds_done"] = 1000000; }, "rounds_done is 1000000");
  expect_edit_refused([](auto& j) { j["final_ready"] = true; }, "final_ready without loop_done");
  expect_edit_refused([](auto& j) { j["rounds"][0]["rejected"] = {7}; }, "did not score");
  expect_edit_refused([](auto& j) { j["has_prev"] = {1, 2}; }, "has_prev");
  expect_edit_refused([](auto& j) { j["last_scored"] = {0, 1, 2}; }, "last maps");
}

TEST(CheckpointLock, ASecondHolderIsRefusedUntilTheFirstLetsGo) {
  TempDir tmp;
  const fs::path ck = tmp / "ck";
  auto first = lock_refine_checkpoint(ck);
  EXPECT_TRUE(fs::is_directory(ck));
  expect_input_error([&] { lock_refine_checkpoint(ck); }, ck.string(),
                     "in use by another mirad run");
  first.reset();
  EXPECT_FALSE(fs::exists(ck)) << "an empty folder goes with its lock";
  auto again = lock_refine_checkpoint(ck);
  save_refine_checkpoint(ck, fuzz::tiny_checkpoint());
  again.reset();
  EXPECT_TRUE(fs::exists(ck / "checkpoint.json")) << "a checkpoint outlives its lock";
}

TEST(CheckpointLock, StaleTemporariesOfOurNamingGoAndNothingElse) {
  TempDir tmp;
  const fs::path ck = tmp / "ck";
  save_refine_checkpoint(ck, fuzz::tiny_checkpoint());
  for (const char* n : {".checkpoint.safetensors.Ab3xZ9", ".checkpoint.json.q1w2e3",
                        ".checkpoint.0123456789abcdef.safetensors.XyZ123"})
    std::ofstream(ck / n) << "left by a SIGKILL";
  for (const char* n : {"notes.txt", ".checkpoint.json.toolong1", ".other.json.Ab3xZ9"})
    std::ofstream(ck / n) << "a user's";
  auto lock = lock_refine_checkpoint(ck);
  for (const char* n : {".checkpoint.safetensors.Ab3xZ9", ".checkpoint.json.q1w2e3",
                        ".checkpoint.0123456789abcdef.safetensors.XyZ123"})
    EXPECT_FALSE(fs::exists(ck / n)) << n;
  for (const char* n : {"notes.txt", ".checkpoint.json.toolong1", ".other.json.Ab3xZ9"})
    EXPECT_TRUE(fs::exists(ck / n)) << n;
  EXPECT_TRUE(load_refine_checkpoint(ck).has_value());
}
