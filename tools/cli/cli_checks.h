// CLI11 validators for the numeric and path options of every subcommand. CLI11 2.1 alone lets
// "nan" and "inf" through CLI::Range (every comparison with NaN is false), wraps "-1" and
// values >= 2^64 into a uint64 (strtoull), and reads "010" as octal; these refuse all of that
// before CLI11 converts the text, and rewrite accepted integers in plain decimal.
#pragma once

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

#include "core/threads.h"

namespace mirad::cli {

namespace detail {

// Parses an optionally '-'-signed run of decimal digits, nothing else (no '+', spaces, "0x",
// exponents or fractions). Returns "" and sets `value`, or the reason it is not one.
template <typename T>
std::string parse_decimal(const std::string& text, T& value) {
  const char* first = text.data();
  const char* last = text.data() + text.size();
  const bool negative = !text.empty() && text[0] == '-';
  const char* digits = negative ? first + 1 : first;
  if (digits == last) return "expected an integer, got '" + text + "'";
  for (const char* p = digits; p != last; ++p)
    if (*p < '0' || *p > '9')
      return "expected a whole number in decimal digits, got '" + text + "'";
  if (negative && std::is_unsigned_v<T>) return "must not be negative, got '" + text + "'";
  const auto [end, ec] = std::from_chars(first, last, value, 10);
  if (ec == std::errc::result_out_of_range) return "'" + text + "' is out of range";
  if (ec != std::errc() || end != last) return "expected an integer, got '" + text + "'";
  return "";
}

}  // namespace detail

// A finite number in [min, max]: refuses NaN, +-Inf, overflow ("1e999") and trailing junk.
inline CLI::Validator FiniteRange(double min, double max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        errno = 0;
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        if (text.empty() || end != text.c_str() + text.size())
          return "expected a number, got '" + text + "'";
        if (!std::isfinite(v) || errno == ERANGE)
          return "must be a finite number, got '" + text + "'";
        if (v < min || v > max) return fmt::format("{} is not in range [{}, {}]", text, min, max);
        return std::string();
      },
      fmt::format("FINITE in [{} - {}]", min, max), "FiniteRange");
}

// A whole number in decimal digits within [min, max] (for int and int64 options): refuses
// fractions, exponents, hex/octal spellings and values outside the range or int64.
inline CLI::Validator IntegerRange(int64_t min, int64_t max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        int64_t v = 0;
        if (std::string why = detail::parse_decimal(text, v); !why.empty()) return why;
        if (v < min || v > max) return fmt::format("{} is not in range [{}, {}]", text, min, max);
        text = std::to_string(v);  // "010" must not reach CLI11's base-0 strtoll as octal
        return std::string();
      },
      fmt::format("INT in [{} - {}]", min, max), "IntegerRange");
}

// An unsigned 64-bit integer (seeds) in decimal digits: refuses "-1" (CLI11 wraps it to
// 2^64 - 1), "1.5", "1e3", "0x10" and anything >= 2^64 (CLI11 saturates those).
inline CLI::Validator Unsigned64() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        uint64_t v = 0;
        if (std::string why = detail::parse_decimal(text, v); !why.empty())
          return why + " (expected an integer in [0, 2^64 - 1])";
        text = std::to_string(v);
        return std::string();
      },
      "UINT64", "Unsigned64");
}

// --threads: 0 (every core) up to 4x the cores this process may run on. More threads than
// that only oversubscribe: 4096 made a 0.2 s predict take 29 s and 1.77 GB (issue 13).
constexpr int kThreadsPerCoreCap = 4;
inline int thread_cap() { return kThreadsPerCoreCap * available_cores(); }
inline const char* kThreadsHelp = "thread budget (0 = every core; at most 4x the cores)";
inline CLI::Validator ThreadCount() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        int64_t v = 0;
        if (std::string why = detail::parse_decimal(text, v); !why.empty()) return why;
        if (v < 0) return fmt::format("{} is negative (0 = every core)", text);
        const int cap = thread_cap();
        if (v > cap)
          return fmt::format("{} is above the cap of {} ({}x the {} cores)", text, cap,
                             kThreadsPerCoreCap, available_cores());
        text = std::to_string(v);
        return std::string();
      },
      fmt::format("INT in [0 - {}]", thread_cap()), "ThreadCount");
}

// A non-empty value (paths: --out "" would otherwise reach the file system as "").
inline CLI::Validator NonEmpty() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        return text.empty() ? std::string("must not be empty") : std::string();
      },
      "", "NonEmpty");
}

}  // namespace mirad::cli
