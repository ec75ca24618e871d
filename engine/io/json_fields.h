// Strict reading of one JSON object's fields for configs: unknown keys are errors (naming the
// valid ones), integers must be integers, numbers must be finite and in range.
#pragma once

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace mirad {

class JsonFields {
 public:
  // `where` names the object in messages ("config.train"). Throws unless j is an object whose
  // keys are all in `known`.
  JsonFields(const nlohmann::json& j, std::string where, const std::set<std::string>& known)
      : m_j(j), m_where(std::move(where)) {
    CHECK_INPUT(j.is_object(), "{} must be a JSON object", m_where);
    for (auto& [key, value] : j.items()) {
      if (known.count(key)) continue;
      std::string valid;
      for (const auto& k : known) valid += (valid.empty() ? "" : ", ") + k;
      throw InputError(fmt::format("{}: unknown key '{}' (valid: {})", m_where, key, valid));
    }
  }

  bool has(const char* key) const { return m_j.contains(key); }

  // An integer in [lo, hi]; the field keeps its value when the key is absent.
  template <typename I>
  void integer(const char* key, I& field, I lo, I hi) const {
    static_assert(std::is_integral_v<I>);
    if (!m_j.contains(key)) return;
    const auto& v = m_j.at(key);
    // nlohmann converts 16.9 to 16 and -1 to 2^64-1 without a word.
    // Parsed text gives unsigned for non-negative literals; built JSON may hold a signed 5.
    const bool ok =
        std::is_unsigned_v<I>
            ? v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)
            : (v.is_number_integer() && !v.is_number_unsigned()) ||
                  (v.is_number_unsigned() && v.get<uint64_t>() <= uint64_t(INT64_MAX));
    CHECK_INPUT(ok, "{}.{} must be an integer in [{}, {}] (got {})", m_where, key, lo, hi,
                short_dump(v));
    const I x = v.get<I>();
    CHECK_INPUT(x >= lo && x <= hi, "{}.{} must be in [{}, {}] (got {})", m_where, key, lo, hi,
                x);
    field = x;
  }

  // A finite number in [lo, hi].
  void number(const char* key, double& field, double lo, double hi) const {
    if (!m_j.contains(key)) return;
    const auto& v = m_j.at(key);
    CHECK_INPUT(v.is_number(), "{}.{} must be a number (got {})", m_where, key, short_dump(v));
    const double x = v.get<double>();
    CHECK_INPUT(std::isfinite(x) && x >= lo && x <= hi, "{}.{} must be in [{}, {}] (got {})",
                m_where, key, lo, hi, x);
    field = x;
  }

  void boolean(const char* key, bool& field) const {
    if (!m_j.contains(key)) return;
    const auto& v = m_j.at(key);
    CHECK_INPUT(v.is_boolean(), "{}.{} must be true or false (got {})", m_where, key,
                short_dump(v));
    field = v.get<bool>();
  }

  // A string, one of `allowed` when that is not empty.
  void string(const char* key, std::string& field, const std::vector<std::string>& allowed = {}) const {
    if (!m_j.contains(key)) return;
    const auto& v = m_j.at(key);
    CHECK_INPUT(v.is_string(), "{}.{} must be a string (got {})", m_where, key, short_dump(v));
    const std::string s = v.get<std::string>();
    if (!allowed.empty()) {
      bool found = false;
      std::string list;
      for (const auto& a : allowed) found |= a == s, list += (list.empty() ? "" : ", ") + a;
      CHECK_INPUT(found, "{}.{} must be one of {} (got '{}')", m_where, key, list, s);
    }
    field = s;
  }

  void strings(const char* key, std::vector<std::string>& field) const {
    if (!m_j.contains(key)) return;
    const auto& v = m_j.at(key);
    CHECK_INPUT(v.is_array(), "{}.{} must be an array of strings", m_where, key);
    std::vector<std::string> out;
    for (const auto& e : v) {
      CHECK_INPUT(e.is_string(), "{}.{} must be an array of strings", m_where, key);
      out.push_back(e.get<std::string>());
    }
    field = std::move(out);
  }

  const nlohmann::json& object(const char* key) const { return m_j.at(key); }
  const std::string& where() const { return m_where; }

 private:
  // Untrusted values may be deep: never dump() them whole into a message.
  static std::string short_dump(const nlohmann::json& v) {
    if (v.is_structured()) return v.is_array() ? "an array" : "an object";
    std::string s = v.dump();
    return s.size() > 40 ? s.substr(0, 40) + "..." : s;
  }

  const nlohmann::json& m_j;
  std::string m_where;
};

}  // namespace mirad
