// Thread budget: openblas_set_num_threads and omp_set_num_threads (oneDNN's runtime).
#include "core/threads.h"

#include <cblas.h>
#include <omp.h>
#include <sched.h>

#include "core/error.h"

namespace mirad {

void set_compute_threads(int n) {
  CHECK_INPUT(n >= 1 && n <= 4096, "threads: {} is not in [1, 4096]", n);
  openblas_set_num_threads(n);
  omp_set_num_threads(n);
}

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

}  // namespace mirad
