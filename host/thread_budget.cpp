// The job's thread budget, applied to the compute libraries.
#include "host/thread_budget.h"

#include "core/threads.h"

namespace mirad {

int apply_thread_budget(int threads) {
  const int n = threads > 0 ? threads : available_cores();
  set_compute_threads(n);
  return n;
}

}  // namespace mirad
