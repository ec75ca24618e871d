// A fresh temporary directory per test, removed with everything in it afterwards.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>

#include "core/error.h"

namespace mirad::test {

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "mirad") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (prefix + "_XXXXXX")).string();
    CHECK_THROW(::mkdtemp(tmpl.data()) != nullptr);
    m_path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return m_path; }
  std::filesystem::path operator/(const std::string& name) const { return m_path / name; }

 private:
  std::filesystem::path m_path;
};

// True when `dir` holds a leftover temporary file of write_file_atomic (".<name>.XXXXXX").
inline bool has_atomic_write_leftovers(const std::filesystem::path& dir) {
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.path().filename().string().starts_with(".")) return true;
  return false;
}

}  // namespace mirad::test
