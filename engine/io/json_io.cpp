// Bounded JSON parsing: a SAX pass that limits nesting and finds repeated keys, then the DOM.
#include "engine/io/json_io.h"

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "engine/io/file_io.h"

namespace mirad {

using nlohmann::json;

namespace {

// Validates structure without building anything. Returning false stops nlohmann's parser at
// once, so a 65,000-level document costs 65 pushes, not 65,000.
class BoundedSax {
 public:
  explicit BoundedSax(int max_depth) : m_max_depth(max_depth) {}

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) { return open(); }
  bool start_array(std::size_t) { return open(); }
  bool end_array() { return close(); }
  bool key(json::string_t& k) {
    m_frames.back().keys.push_back(k);
    return true;
  }
  bool end_object() {
    // Sorting the keys at the close is O(n log n) whatever the names, where a hash set could
    // be flooded by crafted colliding names back into the quadratic time of bug 4.
    std::vector<std::string>& keys = m_frames.back().keys;
    std::sort(keys.begin(), keys.end());
    auto dup = std::adjacent_find(keys.begin(), keys.end());
    if (dup != keys.end()) {
      m_problem = fmt::format("key '{}' appears twice in one object", printable(*dup));
      return false;
    }
    return close();
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    m_problem = fmt::format("not valid JSON ({})", printable(e.what()));
    return false;
  }

  const std::string& problem() const { return m_problem; }

 private:
  struct Frame {
    std::vector<std::string> keys;  // objects only
  };

  bool open() {
    if (static_cast<int>(m_frames.size()) >= m_max_depth) {
      m_problem = fmt::format("arrays/objects nested deeper than {} levels", m_max_depth);
      return false;
    }
    m_frames.emplace_back();
    return true;
  }
  bool close() {
    m_frames.pop_back();
    return true;
  }

  int m_max_depth;
  std::vector<Frame> m_frames;
  std::string m_problem;
};

// Length of the well-formed UTF-8 sequence at s[i], or 0 if there is none (Unicode 15, table
// 3-7: the second byte's range depends on the first, which excludes overlongs and surrogates).
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  std::size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (std::size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

}  // namespace

json parse_json_bounded(std::string_view text, const std::string& what, int max_depth) {
  CHECK_THROW(max_depth >= 1);
  BoundedSax sax(max_depth);
  const bool ok = json::sax_parse(text.begin(), text.end(), &sax, json::input_format_t::json,
                                  /*strict=*/true, /*ignore_comments=*/false);
  if (!ok) {
    CHECK_THROW(!sax.problem().empty());
    throw InputError(fmt::format("{}: {}", what, sax.problem()));
  }
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    // The SAX pass accepted the text, so the DOM parser refusing it would be a bug here.
    throw std::runtime_error(
        fmt::format("{}: DOM parse failed after SAX accepted it ({})", what, e.what()));
  }
}

json read_json_file(const std::filesystem::path& path, uint64_t max_bytes, int max_depth) {
  const std::string text = read_file_text(path, max_bytes);
  return parse_json_bounded(text, path.string(), max_depth);
}

std::string json_excerpt(const json& v, std::size_t max_chars) {
  // replace: a value built in memory may hold invalid UTF-8, and a message must not throw.
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > max_chars) {
    // Cut on a character boundary so that the excerpt stays valid UTF-8.
    std::size_t cut = max_chars;
    while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
    s.resize(cut);
    s += "...";
  }
  return s;
}

bool is_valid_utf8(std::string_view text) {
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_sequence(text, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = utf8_sequence(text, i);
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (n == 0 || c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
      ++i;
      continue;
    }
    out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

void require_utf8_path(const std::filesystem::path& path, std::string_view what) {
  CHECK_INPUT(is_valid_utf8(path.native()),
              "{}: the name {} is not valid UTF-8, which the JSON it would be stored in cannot "
              "hold; rename the file",
              what, printable(path.native()));
}

}  // namespace mirad
