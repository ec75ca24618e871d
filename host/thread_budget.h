// One thread budget for a job: compute libraries (oneDNN, OpenBLAS) and decode threads.
#pragma once

namespace mirad {

// Applies the thread budget: compute libraries and decode threads (0 = every core). Returns the
// number of threads it set.
int apply_thread_budget(int threads);

}  // namespace mirad
