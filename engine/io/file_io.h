// Whole-file reads (regular files only, size-capped) and atomic writes (temp file + rename)
// shared by decoders, encoders and manifests, with the checks every output path must pass.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace mirad {

// ---- reading ----------------------------------------------------------------------------------

// Default cap of read_file_bytes / read_file_text. Callers pass their format's own limit
// (kMaxImageFileBytes, a graph's or manifest's); this one only stops a forgotten cap from
// meaning "all of memory".
inline constexpr uint64_t kMaxReadBytes = uint64_t(1) << 30;

// InputError "<path>: <problem>" unless `path` names a regular file (symlinks followed): "no
// such file or directory", "symbolic link loop", "cannot open (<the system's words>)" for
// anything else ("Permission denied"), "is a directory", or "is a FIFO (named pipe) / character
// device / block device / socket, not a regular file". Returns the file's size in bytes.
uint64_t require_regular_file(const std::filesystem::path& path);

// Opens a regular file read-only, refusing anything else as require_regular_file does; the open
// cannot block (a FIFO swapped in after the check is caught by fstat on the descriptor).
// Returns the descriptor, which the caller closes, and its size in *size when given.
int open_regular_file(const std::filesystem::path& path, uint64_t* size = nullptr);

// Reads the whole file. InputError naming the path if it is missing, not a regular file
// (devices such as /dev/zero never end, FIFOs block), unreadable, or larger than max_bytes
// (checked from its size before reading, and again while reading, in case it grows).
std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path,
                                     uint64_t max_bytes = kMaxReadBytes);
std::string read_file_text(const std::filesystem::path& path, uint64_t max_bytes = kMaxReadBytes);

// ---- writing ----------------------------------------------------------------------------------

// InputError unless write_file_atomic could write `path` without replacing anything but an
// ordinary file: the path must be non-empty, name a file (not end in '/' or be "." / ".."),
// lie in an existing folder, and, if it exists, be a regular file and not a symlink (the rename
// would replace a device node such as /dev/full, or the link itself, not write through it).
// write_file_atomic checks it too; subcommands call it up front, so that a bad output path
// fails before the work rather than after it.
void check_output_file(const std::filesystem::path& path);

// InputError when writing `output` would overwrite one of `inputs` (a file, or anything inside
// an input folder; links, "..", hard links resolved): inputs are never modified. Pass every
// input of the run: images and their folders, dataset root and list files, backbone/model
// folders and files, manifests, configs.
void refuse_overwriting_inputs(const std::filesystem::path& output,
                               const std::vector<std::filesystem::path>& inputs);

// check_output_file(output) + refuse_overwriting_inputs(output, inputs): the one call a
// subcommand makes per output file before doing any work.
void check_output(const std::filesystem::path& output,
                  const std::vector<std::filesystem::path>& inputs);

// Writes bytes to a unique temporary file beside `path` (".<name>.XXXXXX"), then renames it
// over `path`, so a reader never sees a half-written file and a failed write leaves the
// previous version intact. check_output_file(path) runs first. With sync the data and the
// rename are fsync'ed, which makes this hold across a power loss too; generators writing
// thousands of files may skip that (each fsync can cost milliseconds).
void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> bytes,
                       bool sync = true);
void write_file_atomic(const std::filesystem::path& path, std::string_view text, bool sync = true);

}  // namespace mirad
