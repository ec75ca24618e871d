// Numbers in the JSON that mirad writes (reports, cleaning results, models).
#pragma once

#include <cmath>

#include <nlohmann/json.hpp>

namespace mirad {

// v as a JSON number, or null when it is NaN or infinite: JSON has neither, and a null in the
// document (not a NaN that dump() happens to print as null) reads back as what was written.
inline nlohmann::json json_number(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}

}  // namespace mirad
