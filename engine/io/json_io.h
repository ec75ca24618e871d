// Bounded JSON reading for every JSON document mirad reads (graphs, safetensors headers,
// manifests, configs, models), and helpers for echoing untrusted names in messages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace mirad {

// Nesting allowed by default: the deepest real document (a graph's op fields) needs 4 levels.
// nlohmann's dump(), comparisons and our messages recurse once per level, so an unbounded
// depth (~65,000 '[' in a header) overflowed the stack.
inline constexpr int kMaxJsonDepth = 64;

// Parses `text` strictly (RFC 8259: no comments, nothing after the value). InputError
// "<what>: ..." for malformed JSON, arrays/objects nested deeper than max_depth, and an object
// key given twice at any level (nlohmann keeps the last one silently; a repeated key is a
// typo or a forged file). The depth and keys are checked by a SAX pass before any DOM is
// built; both passes are linear in the size of `text`.
nlohmann::json parse_json_bounded(std::string_view text, const std::string& what,
                                  int max_depth = kMaxJsonDepth);

// read_file_text (regular files only, at most max_bytes) + parse_json_bounded, naming the file.
nlohmann::json read_json_file(const std::filesystem::path& path, uint64_t max_bytes,
                              int max_depth = kMaxJsonDepth);

// At most max_chars of v.dump() (then "..."), for error messages: a value from a document can
// be megabytes long. Safe on any value parse_json_bounded produced (its depth is bounded).
std::string json_excerpt(const nlohmann::json& v, std::size_t max_chars = 80);

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF),
// which nlohmann's dump() requires of every string it writes.
bool is_valid_utf8(std::string_view text);

// `text` for a message: NUL, other control bytes, backslash and bytes that are not valid UTF-8
// as \xNN (a NUL would cut the printed message short, invalid UTF-8 garbles terminals).
std::string printable(std::string_view text);

// InputError "<what>: the name <printable path> is not valid UTF-8 ..." unless the path's bytes
// are valid UTF-8; for paths that are about to be stored in JSON (manifests, metadata), so the
// run fails up front and names the file instead of failing after the work is done.
void require_utf8_path(const std::filesystem::path& path, std::string_view what);

}  // namespace mirad
