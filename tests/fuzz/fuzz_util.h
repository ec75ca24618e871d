// What every libFuzzer target here shares: the rule (InputError is the expected answer to bad
// bytes, anything else escapes and crashes, which libFuzzer reports as a finding), a scratch
// folder for readers that take paths, and the splitting of one input into several files.
#pragma once

#include <stdlib.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/error.h"

namespace mirad::fuzz {

namespace fs = std::filesystem;

// Separates the parts of a multi-file input (a model's config.json and flow.safetensors, a graph
// and its weights). JSON text cannot hold a NUL byte, so the first part never contains it by
// accident; only the first occurrence splits, so a binary last part may contain it freely.
inline constexpr std::string_view kPartSeparator{"\0PART\0", 6};

// Runs `read` on one input: an InputError is the reader doing its job; any other exception is
// left to escape, so std::terminate aborts and libFuzzer saves the input as a crash.
// MIRAD_FUZZ_VERBOSE=1 prints each InputError (to see how far a seed gets).
template <typename F>
void expect_only_input_errors(F&& read) {
  try {
    read();
  } catch (const InputError& e) {
    static const bool verbose = std::getenv("MIRAD_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "InputError: %s\n", e.what());
  }
}

// Called first by every target: silences logging (a warning per input would dominate the run
// time) and returns a scratch folder private to this process, removed at a normal exit.
inline const fs::path& setup() {
  static const fs::path dir = [] {
    spdlog::set_level(spdlog::level::off);
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/mirad_fuzz_XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mirad fuzz: mkdtemp");
      std::abort();
    }
    static fs::path keep = tmpl;
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(keep, ec);
    });
    return fs::path(tmpl);
  }();
  return dir;
}

// Empties `dir` (creating it if needed), so no file from the previous input survives.
inline void reset_dir(const fs::path& dir) {
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir);
}

inline void write_file(const fs::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) {
    std::fprintf(stderr, "mirad fuzz: cannot write %s\n", path.c_str());
    std::abort();
  }
}

inline std::string_view as_text(const uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// The input up to the first kPartSeparator, and the rest (empty and has_second = false when
// there is no separator).
struct Parts {
  std::string_view first, second;
  bool has_second = false;
};
inline Parts split_parts(std::string_view input) {
  const auto at = input.find(kPartSeparator);
  if (at == std::string_view::npos) return {input, {}, false};
  return {input.substr(0, at), input.substr(at + kPartSeparator.size()), true};
}

// Every occurrence of `token` in `text` replaced by `value`.
inline std::string replace_all(std::string_view text, std::string_view token,
                               std::string_view value) {
  std::string out;
  out.reserve(text.size());
  std::size_t from = 0;
  for (auto at = text.find(token); at != std::string_view::npos; at = text.find(token, from)) {
    out.append(text.substr(from, at - from));
    out.append(value);
    from = at + token.size();
  }
  out.append(text.substr(from));
  return out;
}

// A property a target checks beyond "no crash" (a round trip); a failure aborts like a crash.
inline void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "mirad fuzz: property violated: %s\n", what);
    std::abort();
  }
}

}  // namespace mirad::fuzz
