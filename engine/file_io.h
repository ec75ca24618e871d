// Whole-file reads and atomic writes (temp file + rename) shared by decoders, encoders and
// manifests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>
#include <vector>

namespace mirad {

// Reads the whole file; InputError naming the path if it is missing, a directory or unreadable.
std::vector<uint8_t> read_file_bytes(const std::filesystem::path& path);

// Writes bytes to a unique temporary file beside `path` (".<name>.XXXXXX"), then renames it
// over `path`, so a reader never sees a half-written file and a failed write leaves the
// previous version intact. With sync the data and the rename are fsync'ed, which makes this
// hold across a power loss too; generators writing thousands of files may skip that (each
// fsync can cost milliseconds).
void write_file_atomic(const std::filesystem::path& path, std::span<const uint8_t> bytes,
                       bool sync = true);
void write_file_atomic(const std::filesystem::path& path, std::string_view text, bool sync = true);

// InputError when writing `output` would overwrite one of `inputs` (a file, or anything inside
// an input folder): the input dataset is never modified.
void refuse_overwriting_inputs(const std::filesystem::path& output,
                               const std::vector<std::filesystem::path>& inputs);

}  // namespace mirad
