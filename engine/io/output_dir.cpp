// Staged output folders: checks of what an existing output holds, the temporary folder a run
// builds in (locked with flock, so that a later run can tell a killed run's leftover from a live
// one), and the swap into place.
#include "engine/io/output_dir.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "engine/io/json_io.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

constexpr const char* kTempTag = ".mirad-";

std::string temp_prefix(const fs::path& target) {
  std::string p = ".";  // appended, not "." + s: GCC 12 warns falsely (-Wrestrict) on that
  p += target.filename().string();
  p += kTempTag;
  return p;
}

// The names of a few entries, for a message that must stay one line.
std::string name_some(const std::vector<std::string>& names) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < 5; ++i) s += (i ? ", " : "") + printable(names[i]);
  if (names.size() > 5) s += fmt::format(" and {} more", names.size() - 5);
  return s;
}

void fsync_dir(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

// An exclusive flock on the folder, held until the descriptor is closed (or the process dies:
// the kernel drops it then, which is what tells a killed run's folder from a live one). -1 when
// another process holds it.
int try_lock_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return -1;
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::vector<std::string> foreign_entries(const fs::path& dir, const OutputKind& kind) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(fs::symlink_status(dir, ec))) return out;
  fs::recursive_directory_iterator it(dir, ec), end;
  CHECK_INPUT(!ec, "{}: cannot list the folder ({})", printable(dir.string()), ec.message());
  for (; it != end; it.increment(ec)) {
    CHECK_INPUT(!ec, "{}: cannot list the folder ({})", printable(dir.string()), ec.message());
    const fs::path rel = it->path().lexically_relative(dir);
    // symlink_status: a link is never ours, and is not followed into.
    const bool is_dir = fs::is_directory(it->symlink_status(ec));
    if (!kind.owns(rel, is_dir)) {
      out.push_back(rel.string());
      if (is_dir) it.disable_recursion_pending();
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void check_replaceable(const fs::path& dir, const OutputKind& kind, const std::string& option) {
  const std::string name = option + " " + printable(dir.string());
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    CHECK_INPUT(errno == ENOENT, "{}: cannot check the output folder ({})", name,
                std::strerror(errno));
    return;
  }
  CHECK_INPUT(!S_ISLNK(st.st_mode), "{}: is a symbolic link; refusing to replace it (name its "
              "target instead)", name);
  CHECK_INPUT(S_ISDIR(st.st_mode), "{}: exists and is not a folder; refusing to replace it", name);
  std::error_code ec;
  if (fs::is_empty(dir, ec) && !ec) return;
  std::vector<std::string> all;
  for (const auto& e : fs::directory_iterator(dir, ec)) all.push_back(e.path().filename().string());
  std::sort(all.begin(), all.end());
  CHECK_INPUT(kind.is_ours(dir), "{}: exists, is not empty and is not {} (it holds {}); "
              "refusing to replace it: choose another folder or an empty one", name, kind.name,
              name_some(all));
  const auto foreign = foreign_entries(dir, kind);
  CHECK_INPUT(foreign.empty(), "{}: holds files that are not part of {} ({}); refusing to "
              "replace the folder and lose them: move them away or choose another folder",
              name, kind.name, name_some(foreign));
}

void remove_stale_temporaries(const fs::path& target) {
  std::error_code ec;
  const fs::path abs = fs::absolute(target, ec);
  const fs::path parent = abs.parent_path();
  const std::string prefix = temp_prefix(abs);
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string n = e.path().filename().string();
    // Exactly ".<name>.mirad-" and mkdtemp's six letters or digits: never a user's folder.
    if (n.size() != prefix.size() + 6 || !n.starts_with(prefix)) continue;
    if (!std::all_of(n.begin() + long(prefix.size()), n.end(),
                     [](unsigned char c) { return std::isalnum(c) != 0; }))
      continue;
    if (fs::is_directory(e.symlink_status(ec))) stale.push_back(e.path());
  }
  for (const auto& p : stale) {
    const int fd = try_lock_dir(p);
    if (fd < 0) continue;  // a live run's folder (or gone already)
    fs::remove_all(p, ec);
    ::close(fd);
  }
}

StagedDir::StagedDir(fs::path target, OutputKind kind, std::string option)
    : m_kind(std::move(kind)), m_option(std::move(option)) {
  std::error_code ec;
  CHECK_INPUT(!target.empty(), "{}: empty output path", m_option);
  m_target = fs::absolute(target, ec).lexically_normal();
  if (!m_target.has_filename()) m_target = m_target.parent_path();  // "out/" names "out"
  const std::string name = m_option + " " + printable(target.string());
  check_replaceable(target, m_kind, m_option);  // named as the person gave it
  const fs::path parent = m_target.parent_path();
  struct stat st {};
  CHECK_INPUT(::stat(parent.c_str(), &st) == 0, "{}: cannot use the folder {} ({})", name,
              printable(parent.string()), std::strerror(errno));
  CHECK_INPUT(S_ISDIR(st.st_mode), "{}: {} is not a folder", name, printable(parent.string()));
  remove_stale_temporaries(m_target);
  std::string tmpl = (parent / (temp_prefix(m_target) + "XXXXXX")).string();
  CHECK_INPUT(::mkdtemp(tmpl.data()) != nullptr, "{}: cannot create a folder in {} ({})", name,
              printable(parent.string()), std::strerror(errno));
  m_tmp = tmpl;
  m_lock = try_lock_dir(m_tmp);
  if (m_lock < 0) {
    const int err = errno;
    fs::remove_all(m_tmp, ec);
    throw InputError(fmt::format("{}: cannot lock {} ({})", name, printable(m_tmp.string()),
                                 std::strerror(err)));
  }
  // mkdtemp makes it 0700; the output it becomes is an ordinary folder, as the umask allows.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::chmod(m_tmp.c_str(), 0777 & ~mask);
}

StagedDir::~StagedDir() {
  std::error_code ec;
  if (!m_committed && !m_tmp.empty()) fs::remove_all(m_tmp, ec);
  if (m_lock >= 0) ::close(m_lock);
}

void StagedDir::commit() {
  CHECK_THROW(!m_committed);
  check_replaceable(m_target, m_kind, m_option);
  const std::string name = m_option + " " + printable(m_target.string());
  fsync_dir(m_tmp);
  std::error_code ec;
  const bool replace = fs::exists(fs::symlink_status(m_target, ec)) && !fs::is_empty(m_target, ec);
  if (!replace) {
    // rename() replaces an empty folder itself.
    CHECK_INPUT(::rename(m_tmp.c_str(), m_target.c_str()) == 0,
                "{}: cannot move the finished folder into place ({})", name, std::strerror(errno));
  } else if (::renameat2(AT_FDCWD, m_tmp.c_str(), AT_FDCWD, m_target.c_str(), RENAME_EXCHANGE) ==
             0) {
    // Readers see the old output or the new one, never a mix; m_tmp now holds the old one.
    fs::remove_all(m_tmp, ec);
  } else {
    // No RENAME_EXCHANGE on this file system: move the earlier output aside (into an empty
    // folder of the temporary pattern, so a kill here leaves only a stale temporary), then in.
    std::string tmpl = (m_target.parent_path() / (temp_prefix(m_target) + "XXXXXX")).string();
    CHECK_INPUT(::mkdtemp(tmpl.data()) != nullptr, "{}: cannot create a folder beside it ({})",
                name, std::strerror(errno));
    CHECK_INPUT(::rename(m_target.c_str(), tmpl.c_str()) == 0,
                "{}: cannot move the earlier output aside ({})", name, std::strerror(errno));
    if (::rename(m_tmp.c_str(), m_target.c_str()) != 0) {
      const int err = errno;
      ::rename(tmpl.c_str(), m_target.c_str());  // put the earlier output back
      throw InputError(fmt::format("{}: cannot move the finished folder into place ({})", name,
                                   std::strerror(err)));
    }
    fs::remove_all(tmpl, ec);
  }
  fsync_dir(m_target.parent_path());
  m_committed = true;
}

}  // namespace mirad
