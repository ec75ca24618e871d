// SHA-256 digests (OpenSSL's libcrypto) of files and bytes, as lowercase hex: how a model names
// the exact backbone weights and flow file it was built with.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>

namespace mirad {

std::string sha256_hex(std::span<const uint8_t> bytes);
// Streams the file (regular files only; InputError naming it otherwise).
std::string sha256_file(const std::filesystem::path& path);

}  // namespace mirad
