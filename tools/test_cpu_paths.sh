#!/usr/bin/env bash
# Runs the tests whose numbers depend on the CPU's kernels under forced kernel paths
# (tools/cpu_paths.sh): the determinism claims, the flow, MAML, scoring and refinement, the
# backbone against its references, and the end-to-end quality and resume tests. One CPU model
# then checks what other CPUs of this kind compute (an EPYC Zen 3, where OpenBLAS picks its
# Zen kernels, failed three tests that passed on the machine CI happened to have).
#
#   tools/test_cpu_paths.sh [PATH...]   default: haswell sandybridge, where this CPU has them
#
# The 10-minute quality test (end_to_end_refinement_py) runs under the first path only, to keep
# CI well under its hour; MIRAD_CPU_PATHS_FULL=1 runs it under every path (tools/fresh_check.sh
# runs the whole suite under each).
#
# The build must exist (tools/test.sh builds it). Exits non-zero if any path fails, after
# running them all, and prints one verdict line per path.
set -uo pipefail
cd "$(dirname "$0")/.."
build="${MIRAD_BUILD_DIR:-build}"

# ctest -R: the kernel-sensitive tests (gtest suite names and script tests).
sensitive='FlowApi|^Flow\.|OddSizes/Flow|FlowTasks|FlowDensity|FlowInvertibility|Maml|Refinement'
sensitive+='|Scoring|Rejection|FeatureExtractor|FeatureCache|backbone|Backbone|VecMath|vec_ops'
sensitive+='|optim|patch_ops|map_ops|synth_auroc|synth_baseline|end_to_end|resume_after'
sensitive+='|engine_resnet|cli_embed_mobilenet'

paths=("$@")
if [ ${#paths[@]} -eq 0 ]; then
  for p in haswell sandybridge; do
    tools/cpu_paths.sh env "$p" >/dev/null 2>&1 && paths+=("$p")
  done
fi
[ ${#paths[@]} -gt 0 ] || { echo "test_cpu_paths: this CPU supports no forced path"; exit 0; }

verdicts=()
status=0
ran=0
for p in "${paths[@]}"; do
  if ! env_line=$(tools/cpu_paths.sh env "$p"); then
    verdicts+=("$p: not supported by this CPU (skipped)")
    continue
  fi
  echo "== cpu path $p: ${env_line:-(nothing forced)}"
  start=$SECONDS
  exclude=()
  [ "$ran" -gt 0 ] && [ "${MIRAD_CPU_PATHS_FULL:-0}" != 1 ] && exclude=(-E end_to_end_refinement_py)
  ran=$((ran + 1))
  # shellcheck disable=SC2086
  if env $env_line ctest --test-dir "$build" --output-on-failure -j "$(nproc)" -R "$sensitive" \
      "${exclude[@]}" >"$build/cpu_path_$p.log" 2>&1; then
    verdicts+=("$p: passed ($(grep -Eo '[0-9]+ tests failed out of [0-9]+' "$build/cpu_path_$p.log"), $((SECONDS - start)) s)")
  else
    status=1
    failed=$(sed -n '/The following tests FAILED/,$p' "$build/cpu_path_$p.log" | grep -E '^\s+[0-9]+ - ' || true)
    verdicts+=("$p: FAILED ($((SECONDS - start)) s; log $build/cpu_path_$p.log)")
    [ -n "$failed" ] && verdicts+=("$failed")
  fi
done
printf '%s\n' "${verdicts[@]}"
exit $status
