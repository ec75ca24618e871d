// FolderLock: flock(LOCK_EX | LOCK_NB) on a lock file, re-checked against the path after
// locking, because the holder unlinks the file when it is done.
#include "engine/io/folder_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace mirad {

namespace fs = std::filesystem;

FolderLock::FolderLock(const fs::path& dir, const std::string& lock_name, const std::string& what)
    : m_dir(dir), m_file(dir / lock_name) {
  std::error_code made, probe;
  fs::create_directories(dir, made);
  CHECK_INPUT(fs::is_directory(dir, probe), "{}: cannot create the folder {} ({})", what,
              dir.string(), made ? made.message() : std::string("it exists and is not a folder"));
  // A holder unlinks the lock file on release; a process that opened the old file just before
  // then would lock an orphan inode beside a newcomer's new file. Locking, then checking that
  // the path still names the locked inode, and retrying otherwise, closes that window.
  for (int attempt = 0; attempt < 100; ++attempt) {
    const int fd = ::open(m_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    CHECK_INPUT(fd >= 0, "{}: cannot create the lock file {} ({})", what, m_file.string(),
                std::strerror(errno));
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      CHECK_INPUT(err != EWOULDBLOCK && err != EAGAIN,
                  "{}: the folder {} is in use by another mirad run (it holds {}); wait for "
                  "that run to end, or give this one another folder",
                  what, dir.string(), m_file.string());
      throw InputError(fmt::format("{}: cannot lock {} ({})", what, m_file.string(),
                                   std::strerror(err)));
    }
    struct stat held {}, named {};
    if (::fstat(fd, &held) == 0 && ::stat(m_file.c_str(), &named) == 0 &&
        held.st_dev == named.st_dev && held.st_ino == named.st_ino) {
      m_fd = fd;
      return;
    }
    ::close(fd);  // the holder released and unlinked it meanwhile: lock the new one
  }
  throw InputError(fmt::format("{}: cannot lock {} (it keeps being replaced)", what,
                               m_file.string()));
}

FolderLock::~FolderLock() {
  // Unlinked while still held, so nobody can lock the old inode and believe it is current.
  ::unlink(m_file.c_str());
  ::close(m_fd);
  ::rmdir(m_dir.c_str());  // only succeeds when empty: the run's files were removed
}

}  // namespace mirad
