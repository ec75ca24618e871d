// One thread budget for the CPU compute libraries: OpenBLAS (the flow's GEMMs) and oneDNN
// (the backbone, through its OpenMP runtime). Decode threads are sized by the caller's pool.
#pragma once

namespace mirad {

// Sets both libraries to n threads (n >= 1). Call before the work starts.
void set_compute_threads(int n);
// The number of cores this process may run on (sched_getaffinity), at least 1.
int available_cores();

}  // namespace mirad
