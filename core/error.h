// Error macros: every failing check throws with the statement, file and line (tcnn style).
// *_PRINT variants log instead of throwing, for destructors, which must never throw.
#pragma once

#include <stdexcept>
#include <string>

// fmt 9 disables constexpr under nvcc, which breaks its compile-time format-string checks in
// CUDA translation units; nvcc 13 handles them fine.
#if defined(__NVCC__) && !defined(FMT_USE_CONSTEXPR)
#define FMT_USE_CONSTEXPR 1
#endif
#include <fmt/format.h>

namespace mirad {

// A user-facing error about bad input (shape, NaN, malformed file); message names the problem.
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_at(const char* file, int line, const std::string& what) {
  throw std::runtime_error(fmt::format("{}:{} {}", file, line, what));
}

}  // namespace mirad

#define MIRAD_STR_(x) #x
#define MIRAD_STR(x) MIRAD_STR_(x)

// Internal invariant: a failure is a bug in mirad, not in the caller's data.
#define CHECK_THROW(x)                                                    \
  do {                                                                    \
    if (!(x)) ::mirad::throw_at(__FILE__, __LINE__, "check failed: " #x); \
  } while (0)

// Caller-facing validation: throws InputError with a formatted message.
#define CHECK_INPUT(cond, ...)                                          \
  do {                                                                  \
    if (!(cond)) throw ::mirad::InputError(fmt::format(__VA_ARGS__));   \
  } while (0)
