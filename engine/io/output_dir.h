// Output folders written whole: a run builds its folder in a hidden temporary folder beside the
// target (".<name>.mirad-XXXXXX"), then swaps it into place. A crash, a signal or SIGKILL never
// leaves a half output, a rerun replaces the earlier output as a whole (no stale files), and a
// folder holding anything a run of ours did not write is refused rather than replaced.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace mirad {

// What a tool's output folder holds, so that an existing one can be told from a user's folder.
struct OutputKind {
  std::string name;  // "a mirad model folder", for messages
  // True when `dir` carries this tool's marker file (config.json of format mirad-detector...).
  std::function<bool(const std::filesystem::path& dir)> is_ours;
  // True for the entries (relative to the folder) that a run of the tool writes.
  std::function<bool(const std::filesystem::path& rel, bool is_dir)> owns;
};

// Entries under `dir` (relative, sorted) that `kind` does not own; empty for an absent folder.
std::vector<std::string> foreign_entries(const std::filesystem::path& dir, const OutputKind& kind);

// InputError "<option> <dir>: ..." unless `dir` can be replaced as a whole without losing
// anything: absent, an empty folder, or a folder of `kind` holding nothing else (the message
// names the foreign entries). A symbolic link or a file there is refused too.
void check_replaceable(const std::filesystem::path& dir, const OutputKind& kind,
                       const std::string& option);

// Removes hidden temporaries of earlier runs for `target` (".<name>.mirad-XXXXXX" folders in
// its parent) whose run is gone: each live run holds a lock on its own, so only the folders of
// killed runs are removed, and nothing that does not have this exact naming pattern.
void remove_stale_temporaries(const std::filesystem::path& target);

// The temporary folder one run builds `target` in. The constructor checks the target
// (check_replaceable), removes stale temporaries, and creates and locks its own (an unwritable
// or missing parent fails here, up front, with the system's reason); commit() puts it in place.
class StagedDir {
 public:
  StagedDir(std::filesystem::path target, OutputKind kind, std::string option);
  ~StagedDir();  // an uncommitted folder is removed
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;

  const std::filesystem::path& path() const { return m_tmp; }
  const std::filesystem::path& target() const { return m_target; }
  // Checks the target again (a person may have put files there since), then swaps the finished
  // folder in and deletes the earlier output.
  void commit();

 private:
  std::filesystem::path m_target, m_tmp;
  OutputKind m_kind;
  std::string m_option;
  int m_lock = -1;
  bool m_committed = false;
};

}  // namespace mirad
