// Whole-file reads and atomic writes, on POSIX file descriptors so that the write can be fsync'ed.
#include "engine/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "engine/error.h"

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

}  // namespace

std::vector<uint8_t> read_file_bytes(const fs::path& path) {
  std::error_code ec;
  CHECK_INPUT(!fs::is_directory(path, ec), "{}: is a directory, not a file", path.string());
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  CHECK_INPUT(fd >= 0, "{}: cannot open ({})", path.string(), std::strerror(errno));
  FdCloser closer{fd};
  std::vector<uint8_t> bytes;
  // Read until EOF instead of trusting st_size, which lies for pipes and files being written.
  std::size_t used = 0;
  bytes.resize(64 * 1024);
  for (;;) {
    if (used == bytes.size()) bytes.resize(bytes.size() * 2);
    ssize_t n = ::read(fd, bytes.data() + used, bytes.size() - used);
    if (n < 0 && errno == EINTR) continue;
    CHECK_INPUT(n >= 0, "{}: read failed ({})", path.string(), std::strerror(errno));
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  bytes.resize(used);
  return bytes;
}

void write_file_atomic(const fs::path& path, std::span<const uint8_t> bytes, bool sync) {
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
    const fs::path canon = fs::weakly_canonical(fs::absolute(in, ec), ec);
    if (fs::exists(output, ec) && fs::exists(in, ec) && fs::equivalent(output, in, ec))
      throw InputError(fmt::format("refusing to write {}: it is one of the inputs",
                                   output.string()));
    if (fs::is_directory(in, ec)) {
      auto rel = out.lexically_relative(canon);
      if (!rel.empty() && *rel.begin() != "..")
        throw InputError(fmt::format(
            "refusing to write {} inside the input folder {}: the input data is never modified",
            output.string(), in.string()));
    }
  }
}

void write_file_atomic(const fs::path& path, std::string_view text, bool sync) {
  write_file_atomic(
      path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()),
      sync);
}

}  // namespace mirad
