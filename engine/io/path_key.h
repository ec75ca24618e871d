// One spelling per file: the key under which image paths from different sources (a dataset
// listing, a manifest, a model's retained list) are matched.
#pragma once

#include <filesystem>
#include <string>

namespace mirad {

// The absolute, weakly canonical form of `p` ("a/./b", "a/../a/b" and a symlinked folder name
// the same file), or `p` as given when the file system cannot resolve it. Never throws.
std::string path_key(const std::filesystem::path& p);

}  // namespace mirad
