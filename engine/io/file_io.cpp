// Whole-file reads and atomic writes, on POSIX file descriptors so that reads can refuse
// non-regular files without blocking and writes can be fsync'ed.
#include "engine/io/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "core/error.h"

namespace mirad {

namespace fs = std::filesystem;

namespace {

// Closes a descriptor on scope exit; close errors on the read path carry no information.
struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "directory";
  if (S_ISFIFO(mode)) return "FIFO (named pipe)";
  if (S_ISCHR(mode)) return "character device";
  if (S_ISBLK(mode)) return "block device";
  if (S_ISSOCK(mode)) return "socket";
  if (S_ISLNK(mode)) return "symbolic link";
  return "special file";
}

void check_regular(const fs::path& path, mode_t mode) {
  CHECK_INPUT(!S_ISDIR(mode), "{}: is a directory, not a file", path.string());
  CHECK_INPUT(S_ISREG(mode), "{}: is a {}, not a regular file", path.string(), file_kind(mode));
}

}  // namespace

uint64_t require_regular_file(const fs::path& path) {
  CHECK_INPUT(!path.empty(), "empty file name");
  struct stat st {};
  // stat follows links; its errno tells a missing file from a link loop or a permission error.
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    CHECK_INPUT(err != ENOENT, "{}: no such file or directory (cannot open)", path.string());
    CHECK_INPUT(err != ELOOP, "{}: symbolic link loop (cannot open: {})", path.string(),
                std::strerror(err));
    throw InputError(fmt::format("{}: cannot open ({})", path.string(), std::strerror(err)));
  }
  check_regular(path, st.st_mode);
  return static_cast<uint64_t>(st.st_size);
}

int open_regular_file(const fs::path& path, uint64_t* size) {
  // The stat first keeps devices from being opened at all (opening some has side effects).
  (void)require_regular_file(path);
  // O_NONBLOCK: if a FIFO replaced the file since the stat, open must not wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  CHECK_INPUT(fd >= 0, "{}: cannot open ({})", path.string(), std::strerror(errno));
  FdCloser closer{fd};
  struct stat st {};
  CHECK_INPUT(::fstat(fd, &st) == 0, "{}: cannot stat ({})", path.string(), std::strerror(errno));
  check_regular(path, st.st_mode);
  if (size) *size = static_cast<uint64_t>(st.st_size);
  closer.fd = -1;
  return fd;
}

std::vector<uint8_t> read_file_bytes(const fs::path& path, uint64_t max_bytes) {
  uint64_t size = 0;
  FdCloser closer{open_regular_file(path, &size)};
  CHECK_INPUT(size <= max_bytes, "{}: {} bytes, above the limit of {} bytes for this kind of file",
              path.string(), size, max_bytes);
  std::vector<uint8_t> bytes(static_cast<std::size_t>(size) + 1);
  // Read until EOF rather than trusting st_size alone: the file may be growing. The spare
  // byte makes a file that grew past its size show up without an extra read call.
  std::size_t used = 0;
  for (;;) {
    if (used == bytes.size()) {
      CHECK_INPUT(used <= max_bytes,
                  "{}: grew past the limit of {} bytes for this kind of file while being read",
                  path.string(), max_bytes);
      bytes.resize(std::min<uint64_t>(uint64_t(bytes.size()) * 2, max_bytes + 1));
    }
    ssize_t n = ::read(closer.fd, bytes.data() + used, bytes.size() - used);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    CHECK_INPUT(n >= 0, "{}: read failed ({})", path.string(), std::strerror(errno));
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  CHECK_INPUT(used <= max_bytes,
              "{}: grew past the limit of {} bytes for this kind of file while being read",
              path.string(), max_bytes);
  bytes.resize(used);
  return bytes;
}

std::string read_file_text(const fs::path& path, uint64_t max_bytes) {
  const std::vector<uint8_t> bytes = read_file_bytes(path, max_bytes);
  return std::string(bytes.begin(), bytes.end());
}

void check_output_file(const fs::path& path) {
  CHECK_INPUT(!path.empty(), "empty output path: give a file name");
  const fs::path name = path.filename();
  CHECK_INPUT(!name.empty() && name != "." && name != "..",
              "{}: names a folder; expected an output file name", path.string());
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  struct stat st {};
  CHECK_INPUT(::stat(dir.c_str(), &st) == 0, "{}: cannot write into the folder {} ({})",
              path.string(), dir.string(), std::strerror(errno));
  CHECK_INPUT(S_ISDIR(st.st_mode), "{}: {} is a {}, not a folder", path.string(), dir.string(),
              file_kind(st.st_mode));
  // lstat: the entry itself. The atomic rename replaces the entry, so a symlink would be
  // replaced rather than written through, and a device node turned into a regular file.
  if (::lstat(path.c_str(), &st) != 0) {
    CHECK_INPUT(errno == ENOENT, "{}: cannot check the output path ({})", path.string(),
                std::strerror(errno));
    return;
  }
  CHECK_INPUT(!S_ISLNK(st.st_mode),
              "{}: is a symbolic link; refusing to replace it (name its target instead)",
              path.string());
  CHECK_INPUT(S_ISREG(st.st_mode),
              "{}: exists and is a {}, not a regular file; refusing to "
              "replace it",
              path.string(), file_kind(st.st_mode));
}

void write_file_atomic(const fs::path& path, std::span<const uint8_t> bytes, bool sync) {
  check_output_file(path);
  // A unique temp name beside the target (same file system, so rename is atomic), created
  // exclusively: a fixed name would follow a planted symlink, truncate a stranger's file, and
  // let two writers of one output interleave.
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::string name = ".";  // appended, not "." + s: GCC 12 warns falsely (-Wrestrict) on that
  name += path.filename().string();
  name += ".XXXXXX";
  std::string tmpl = (dir / name).string();
  int fd = ::mkostemp(tmpl.data(), O_CLOEXEC);
  CHECK_INPUT(fd >= 0, "{}: cannot create a temporary file in {} ({})", path.string(),
              dir.string(), std::strerror(errno));
  const fs::path tmp = tmpl;
  auto fail = [&](const char* what) {
    int err = errno;
    ::close(fd);
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: {} failed ({})", tmp.string(), what, std::strerror(err)));
  };
  // mkstemp makes the file 0600; outputs are ordinary files, readable as the umask allows.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  if (::fchmod(fd, 0666 & ~mask) != 0) fail("fchmod");
  std::size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    done += static_cast<std::size_t>(n);
  }
  // Without fsync the rename can reach the disk before the data, leaving an empty file after a
  // power loss, which defeats the point of the temp file.
  if (sync && ::fsync(fd) != 0) fail("fsync");
  if (::close(fd) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw InputError(fmt::format("{}: close failed ({})", tmp.string(), std::strerror(err)));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::string why = ec.message();
    fs::remove(tmp, ec);
    throw InputError(
        fmt::format("{}: cannot rename {} over it ({})", path.string(), tmp.string(), why));
  }
  if (sync) {
    // The rename itself lives in the directory; persist it too.
    int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }
}

void refuse_overwriting_inputs(const fs::path& output, const std::vector<fs::path>& inputs) {
  std::error_code ec;
  const fs::path out = fs::weakly_canonical(fs::absolute(output, ec), ec);
  for (const fs::path& in : inputs) {
    if (in.empty()) continue;
    const fs::path canon = fs::weakly_canonical(fs::absolute(in, ec), ec);
    if (fs::exists(output, ec) && fs::exists(in, ec) && fs::equivalent(output, in, ec))
      throw InputError(fmt::format("refusing to write {}: it is one of the inputs ({})",
                                   output.string(), in.string()));
    if (fs::is_directory(in, ec)) {
      auto rel = out.lexically_relative(canon);
      if (!rel.empty() && *rel.begin() != "..")
        throw InputError(fmt::format(
            "refusing to write {} inside the input folder {}: the inputs are never modified",
            output.string(), in.string()));
    }
  }
}

void check_output(const fs::path& output, const std::vector<fs::path>& inputs) {
  check_output_file(output);
  refuse_overwriting_inputs(output, inputs);
}

void write_file_atomic(const fs::path& path, std::string_view text, bool sync) {
  write_file_atomic(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
      sync);
}

}  // namespace mirad
