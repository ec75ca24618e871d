// The terminal progress line.
#include "tools/cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <string>

#include <fmt/format.h>

namespace mirad::cli {

struct JobBar::State {
  bool enabled = false, drawn = false;
  std::string phase;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now(), last{};
  std::mutex mutex;
};

JobBar::JobBar(bool enabled) : m_state(std::make_shared<State>()) {
  m_state->enabled = enabled && isatty(2);
}

JobBar::~JobBar() {
  if (m_state->enabled && m_state->drawn) std::fputc('\n', stderr);
}

JobProgress JobBar::callback() {
  auto st = m_state;
  return [st](const std::string& phase, int64_t done, int64_t total, double loss) {
    if (!st->enabled) return;
    std::lock_guard<std::mutex> lock(st->mutex);
    const auto now = std::chrono::steady_clock::now();
    if (phase == st->phase && done < total && now - st->last < std::chrono::milliseconds(100))
      return;
    st->last = now;
    st->phase = phase;
    const double secs = std::chrono::duration<double>(now - st->start).count();
    const int width = 24;
    const int filled = total > 0 ? int(width * std::min(done, total) / total) : width;
    std::string note = std::isfinite(loss) ? fmt::format(" loss {:.3f}", loss) : "";
    std::fprintf(stderr, "\r\033[K%6.1fs %-34.34s [%s%s] %lld/%lld%s", secs, phase.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 (long long)done, (long long)total, note.c_str());
    std::fflush(stderr);
    st->drawn = true;
  };
}

}  // namespace mirad::cli
