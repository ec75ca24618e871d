// The terminal progress line of every subcommand: one line on stderr, redrawn at most every
// 100 ms within a phase; silent when stderr is not a terminal or under --json.
#pragma once

#include <memory>

#include "host/job_progress.h"

namespace mirad::cli {

class JobBar {
 public:
  explicit JobBar(bool enabled);
  ~JobBar();
  // A job's progress callback that draws the line ("phase [####....] done/total loss").
  JobProgress callback();

 private:
  struct State;
  std::shared_ptr<State> m_state;
};

}  // namespace mirad::cli
