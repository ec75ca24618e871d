#!/usr/bin/env bash
# CI's sanitizer pass: a CPU-only ASan + UBSan build (MIRAD_SANITIZE, gcc) in ./build-asan (or
# $MIRAD_ASAN_DIR), then every "cpu"-labelled test against it but one (below), the
# Python-driven ones included: they run the sanitized `mirad` that this build produced. Extra
# arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${MIRAD_ASAN_DIR:-build-asan}"
supp="$PWD/tests/sanitizers"

# Exported before the build too: gtest_discover_tests runs each test program at build time, and
# a third-party leak reported at that exit would fail the build.
# - halt_on_error / abort_on_error: the first report ends the program with a failing status.
# - detect_stack_use_after_return: also catches pointers into a returned frame (a little slower).
# - check_initialization_order: static-init order fiascos across translation units.
asan="halt_on_error=1:abort_on_error=1:detect_leaks=1:detect_stack_use_after_return=1"
export ASAN_OPTIONS="$asan:check_initialization_order=1:strict_init_order=1"
# Leak suppressions cover third-party runtimes only; each entry in the file says why.
export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

# -O1 -g1: the optimisation ASan's authors recommend (fast enough, exact reports), line tables
# for symbolised stacks. No NDEBUG, so assert()s in headers we use run as well.
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DMIRAD_CUDA=OFF -DMIRAD_SANITIZE=ON \
      -DMIRAD_BUILD_BENCH=OFF ${MIRAD_CMAKE_ARGS:-} >/dev/null
# Only what the "cpu" tests run: the CLI, the probe, the GoogleTest programs other than
# test_cuda_* (labelled "cuda", not run here) and the fuzz replays; this also keeps a CPU-only
# build independent of the CUDA tests' own code.
targets=(mirad metrics_probe)
for src in tests/test_*.cpp; do
  name=$(basename "$src" .cpp)
  case "$name" in test_cuda_*) ;; *) targets+=("$name") ;; esac
done
targets+=(test_fuzz_findings)
for src in tests/fuzz/fuzz_*.cpp; do targets+=("replay_$(basename "$src" .cpp)"); done
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
# end_to_end_refinement_py is left out here: it measures the method's quality (three demo
# trainings) through the same CLI code paths that end_to_end_product_py and
# resume_after_sigkill_py drive under the sanitizers, and under ASan it alone takes 10.5
# minutes on 2 cores (measured). It runs in the normal build (tools/test.sh).
ctest --test-dir "$build" -L cpu -E '^end_to_end_refinement_py$' --output-on-failure \
      -j "$(nproc)" "$@"
