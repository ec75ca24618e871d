#!/usr/bin/env bash
# Side-by-side CPU comparison of mirad's flow against the same graph in PyTorch, in one run,
# with the same thread count (default 2). Installs Debian's python3-torch and OpenBLAS if
# missing. Usage: tools/bench/compare_torch.sh [threads] [dims]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads="${1:-2}"
dims="${2:-96,256}"
build="${MIRAD_BUILD_DIR:-build}"

source tools/bench/torch_on_openblas.sh
echo "libblas.so.3 -> ${blas_target}"

cmake --build "$build" --target mirad_bench >/dev/null
filter="BM_Flow(ForwardBackward|Hvp)/cpu/($(echo "$dims" | tr ',' '|'))/4096"
out=$(mktemp -d)
OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" "$build/tools/mirad_bench" \
  --benchmark_filter="$filter" --benchmark_min_time=1 --benchmark_format=json \
  > "$out/mirad.json"
OPENBLAS_NUM_THREADS="$threads" OMP_NUM_THREADS="$threads" /usr/bin/python3 \
  tools/bench/torch_flow.py --dims "$dims" --threads "$threads" > "$out/torch.jsonl"
/usr/bin/python3 - "$out" "$threads" <<'PY'
import json, sys, re
out, threads = sys.argv[1], sys.argv[2]
m = {}
for b in json.load(open(f"{out}/mirad.json"))["benchmarks"]:
    g = re.match(r"BM_Flow(\w+)/cpu/(\d+)/(\d+)", b["name"])
    case = "forward_backward" if g.group(1) == "ForwardBackward" else "hvp"
    m[(case, int(g.group(2)))] = b["real_time"]
rows = [json.loads(l) for l in open(f"{out}/torch.jsonl")]
print(f"\nflow, N=4096, 8 blocks, C=64, float32, {threads} threads; torch {rows[0]['torch']} on {rows[0]['blas']}")
print(f"{'case':18} {'D':>5} {'mirad ms':>10} {'torch ms':>10} {'speedup':>8}")
for r in rows:
    k = (r["case"], r["dim"])
    if k in m:
        print(f"{r['case']:18} {r['dim']:>5} {m[k]:>10.1f} {r['ms']:>10.1f} {r['ms']/m[k]:>7.2f}x")
PY
