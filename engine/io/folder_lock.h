// An exclusive, non-blocking lock on a folder that one run owns (a refinement checkpoint):
// flock on a lock file inside it, so a second run on the same folder is refused instead of
// deleting the first one's state (issue 13, finding 6). The kernel drops the lock when the
// process dies, SIGKILL included, so a stale lock file never blocks the next run.
#pragma once

#include <filesystem>
#include <string>

namespace mirad {

class FolderLock {
 public:
  // Creates `dir` when missing, then locks <dir>/<lock_name>. InputError naming the folder
  // when another process holds the lock, or with the system's words when the folder or the
  // lock file cannot be made. `what` names the folder's role in messages ("checkpoint").
  FolderLock(const std::filesystem::path& dir, const std::string& lock_name,
             const std::string& what);
  // Removes the lock file, then the folder if that left it empty (the run's files are gone).
  ~FolderLock();
  FolderLock(const FolderLock&) = delete;
  FolderLock& operator=(const FolderLock&) = delete;

  const std::filesystem::path& dir() const { return m_dir; }

 private:
  std::filesystem::path m_dir, m_file;
  int m_fd = -1;
};

}  // namespace mirad
