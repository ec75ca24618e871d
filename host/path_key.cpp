// Canonical path keys.
#include "host/path_key.h"

namespace mirad {

namespace fs = std::filesystem;

std::string path_key(const fs::path& p) {
  std::error_code ec;
  const fs::path c = fs::weakly_canonical(fs::absolute(p, ec), ec);
  return (ec ? p : c).string();
}

}  // namespace mirad
