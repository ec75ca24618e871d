#!/usr/bin/env bash
# The CPU kernel paths one x86-64 machine can be forced onto, so that the tests whose numbers
# depend on the kernels (determinism, end-to-end quality, backbone against its reference) see
# what other CPUs of this kind compute. OpenBLAS (DYNAMIC_ARCH) picks its GEMM kernels by CPU
# (OPENBLAS_CORETYPE overrides it), oneDNN its JIT ISA (ONEDNN_MAX_CPU_ISA caps it), and mirad's
# vector math AVX2+FMA or SSE2 (MIRAD_MAX_CPU_ISA=SSE2 forces the latter).
#
#   tools/cpu_paths.sh list         the paths this CPU supports, one per line ("native" first)
#   tools/cpu_paths.sh env NAME     the environment assignments of path NAME (empty for native)
#   tools/cpu_paths.sh all          every path's name, supported here or not
#
# A path is listed only when the CPU has every instruction it needs: forcing AVX-512 kernels on
# a CPU without them crashes (SIGILL), it does not emulate.
set -euo pipefail

flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
has() {
  local f
  for f in "$@"; do [[ "$flags" == *" $f "* ]] || return 1; done
}

# name | needed CPU flags | environment
paths=(
  "native||"
  "haswell|avx2 fma|OPENBLAS_CORETYPE=Haswell ONEDNN_MAX_CPU_ISA=AVX2"
  "zen|avx2 fma|OPENBLAS_CORETYPE=Zen"
  "skylakex|avx512f avx512cd avx512bw avx512dq avx512vl|OPENBLAS_CORETYPE=SkylakeX ONEDNN_MAX_CPU_ISA=AVX512_CORE"
  "sandybridge|avx|OPENBLAS_CORETYPE=Sandybridge ONEDNN_MAX_CPU_ISA=AVX MIRAD_MAX_CPU_ISA=SSE2"
)

case "${1:-list}" in
  list)
    for p in "${paths[@]}"; do
      IFS='|' read -r name need _ <<<"$p"
      # shellcheck disable=SC2086
      has $need && echo "$name"
    done
    ;;
  all)
    for p in "${paths[@]}"; do echo "${p%%|*}"; done
    ;;
  env)
    for p in "${paths[@]}"; do
      IFS='|' read -r name need env <<<"$p"
      if [ "$name" = "${2:-}" ]; then
        # shellcheck disable=SC2086
        has $need || { echo "cpu_paths: this CPU lacks ${need} for path ${name}" >&2; exit 1; }
        echo "$env"
        exit 0
      fi
    done
    echo "cpu_paths: unknown path '${2:-}' (tools/cpu_paths.sh all)" >&2
    exit 1
    ;;
  *)
    echo "usage: tools/cpu_paths.sh list | all | env NAME" >&2
    exit 2
    ;;
esac
