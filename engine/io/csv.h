// CSV output (rejected.csv, predictions.csv): fields quoted the RFC 4180 way.
#pragma once

#include <string>

namespace mirad {

// `s` as one CSV field: as it is, or in double quotes (inner quotes doubled) when it holds a
// comma, a quote or a line break, so a file name cannot split or add a row.
inline std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

}  // namespace mirad
