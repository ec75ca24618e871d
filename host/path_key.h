// How jobs match image paths given in different spellings (relative, "./", symlinked folders).
#pragma once

#include <filesystem>
#include <string>

namespace mirad {

// The canonical absolute form of `p` (weakly canonical: it need not exist), as a string key; `p`
// itself when that fails.
std::string path_key(const std::filesystem::path& p);

}  // namespace mirad
