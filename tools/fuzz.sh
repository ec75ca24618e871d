#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, MIRAD_FUZZ: clang, CPU only, ASan + UBSan) in
# ./build-fuzz (or $MIRAD_FUZZ_DIR) and runs each for SECONDS on a copy of its seed corpus
# (tests/fuzz/corpus/<reader>; the committed seeds are never modified). Prints a summary
# (target, execs, execs/s, coverage at start -> end, new corpus units, result), also written to
# <build>/fuzz-run/summary.txt, and exits non-zero if any target crashed, leaked, timed out or ran
# out of memory; its input is kept in <build>/fuzz-run/artifacts/ and the log beside it.
#   usage: tools/fuzz.sh SECONDS [target...]       (default: every tests/fuzz/fuzz_*.cpp)
# Targets run $MIRAD_FUZZ_JOBS at a time (default: the number of CPUs), each single-threaded.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[0-9]+$ ]]; then
  echo "usage: tools/fuzz.sh SECONDS [target...]" >&2
  exit 2
fi
seconds="$1"
shift
build="${MIRAD_FUZZ_DIR:-build-fuzz}"
jobs="${MIRAD_FUZZ_JOBS:-$(nproc)}"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for src in tests/fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi

# -O2 for execs per second, -g1 for symbolised stacks in reports.
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1" -DMIRAD_CUDA=OFF -DMIRAD_FUZZ=ON \
  -DMIRAD_BUILD_TESTS=OFF -DMIRAD_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"

run="$(cd "$build" && pwd)/fuzz-run"
rm -rf "$run"
mkdir -p "$run/artifacts" "$run/corpus" "$run/logs"
# One thread per fuzzer (oneDNN and OpenBLAS would take every core each); the scratch folders
# of the targets go under the run folder.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TMPDIR="$run/tmp"
mkdir -p "$TMPDIR"
# Leak checking stays on (libFuzzer reports a leaking input); third-party leaks are suppressed
# as in tools/sanitize.sh.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export LSAN_OPTIONS="suppressions=$PWD/tests/sanitizers/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

fuzz_one() {
  local target="$1" reader="${1#fuzz_}"
  local corpus="$run/corpus/$reader"
  mkdir -p "$corpus"
  # The seeds, and the inputs of fixed findings: a regression crashes before any fuzzing.
  for seeds in "tests/fuzz/corpus/$reader" "tests/fuzz/regressions/$reader"; do
    if [ -d "$seeds" ]; then cp -r "$seeds/." "$corpus/"; fi
  done
  # 256 KiB inputs hold 65,000 levels of nesting (issue 7, bug 3) with room to spare.
  local rc=0
  "$build/tests/fuzz/$target" -max_total_time="$seconds" -max_len=262144 -timeout=30 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$run/artifacts/$reader-" \
    "$corpus" >"$run/logs/$reader.log" 2>&1 || rc=$?
  echo "$rc" >"$run/logs/$reader.rc"
}

# A simple job pool: at most $jobs fuzzers at once.
for target in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  echo "fuzz: $target for ${seconds}s"
  fuzz_one "$target" &
done
wait

summary="$run/summary.txt"
failed=0
{
  printf '%-22s %12s %9s %15s %6s  %s\n' target execs execs/s "cov start->end" new result
  for target in "${targets[@]}"; do
    reader="${target#fuzz_}"
    log="$run/logs/$reader.log"
    rc=$(cat "$run/logs/$reader.rc")
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    new=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
    cov0=$(grep -m1 -E '^#[0-9]+[[:space:]]+INITED' "$log" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    cov1=$(grep -E '^#[0-9]+[[:space:]]+.* cov: ' "$log" | tail -1 |
           sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    if [ "$rc" = 0 ]; then
      result=ok
    else
      failed=1
      # The first line that says what went wrong: a sanitizer's, an escaped exception's, or
      # libFuzzer's own (timeout, out of memory, leak).
      pattern='ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer): [a-z-]+( [a-z-]+)?'
      pattern+='|runtime error: .{0,80}|terminate called after throwing an instance of [^ ]+'
      pattern+='|what\(\): .{0,100}|property violated: .*'
      kind=$(grep -oE "$pattern" "$log" | head -2 | paste -sd ' ' || true)
      input=$(ls "$run/artifacts/$reader-"* 2>/dev/null | head -1 || true)
      result="FAILED (rc $rc${kind:+: $kind}); log $log; input $input"
    fi
    printf '%-22s %12s %9s %15s %6s  %s\n' "$target" "${execs:-?}" "${rate:-?}" \
      "${cov0:-?}->${cov1:-?}" "${new:-?}" "$result"
  done
} >"$summary"  # not piped into tee: a pipeline's subshell would lose $failed
cat "$summary"
exit "$failed"
