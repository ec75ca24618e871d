// A one-line terminal progress bar on stderr; silent when stderr is not a terminal or --json.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace mirad::cli {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool enabled)
      : m_label(std::move(label)), m_total(total), m_enabled(enabled && isatty(2)),
        m_start(std::chrono::steady_clock::now()) {}
  ~Progress() {
    if (m_enabled && m_drawn) std::fputc('\n', stderr);
  }
  void update(int64_t done, const std::string& note = {}) {
    if (!m_enabled) return;
    auto now = std::chrono::steady_clock::now();
    if (done < m_total && now - m_last < std::chrono::milliseconds(100)) return;
    m_last = now;
    const double secs = std::chrono::duration<double>(now - m_start).count();
    const int width = 30, filled = m_total ? int(width * done / m_total) : width;
    std::fprintf(stderr, "\r%-18s [%s%s] %lld/%lld %5.1fs %s", m_label.c_str(),
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 (long long)done, (long long)m_total, secs, note.c_str());
    std::fflush(stderr);
    m_drawn = true;
  }

 private:
  std::string m_label;
  int64_t m_total;
  bool m_enabled, m_drawn = false;
  std::chrono::steady_clock::time_point m_start, m_last{};
};

}  // namespace mirad::cli
