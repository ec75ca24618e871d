// What a job reports while it runs: its progress through each phase, and each phase's seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace mirad {

// phase ("features", "round 1 fold 2/4 tap 1/2", "scoring"), done, total, loss (NaN if none).
using JobProgress =
    std::function<void(const std::string& phase, int64_t done, int64_t total, double loss)>;

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace mirad
