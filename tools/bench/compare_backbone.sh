#!/usr/bin/env bash
# Side-by-side CPU comparison of mirad's backbone runner against the same graph JSON +
# safetensors run in PyTorch (tools/bench/torch_backbone.py), MobileNetV2 at 224x224, batch 1
# and 16, with the same thread count for both (default: all cores). Prints ms and the ratio.
# Usage: tools/bench/compare_backbone.sh [threads] [min_time_s]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads="${1:-$(nproc)}"
min_time="${2:-3}"
build="${MIRAD_BUILD_DIR:-build}"
export MIRAD_SHARED="${MIRAD_SHARED:-$PWD/../shared}"
if [ ! -f "$MIRAD_SHARED/weights/mobilenet_v2_imagenet/graph.json" ]; then
  echo "no MobileNetV2 weights under $MIRAD_SHARED (set MIRAD_SHARED)"; exit 2
fi

# Debian's torch links the generic libblas.so.3; make sure the alternative points at OpenBLAS
# (the reference BLAS would make the baseline ~15x too slow).
blas_target=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
echo "libblas.so.3 -> ${blas_target}"
case "$blas_target" in *openblas*) ;; *) echo "WARNING: torch would use the reference BLAS" ;; esac

cmake --build "$build" --target mirad_bench >/dev/null
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The same thread count for oneDNN (OpenMP), OpenBLAS and torch.
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads"
"$build/tools/mirad_bench" --benchmark_filter='BM_MobileNetV2/cpu/(1|16)/0/' \
  --benchmark_min_time="$min_time" --benchmark_format=json > "$out/mirad.json"
/usr/bin/python3 tools/bench/torch_backbone.py --threads "$threads" --batches 1,16 \
  --min-time "$min_time" > "$out/torch.jsonl"
/usr/bin/python3 - "$out" "$threads" <<'PY'
import json, re, sys
out, threads = sys.argv[1], sys.argv[2]
m = {}
for b in json.load(open(f"{out}/mirad.json"))["benchmarks"]:
    g = re.match(r"BM_MobileNetV2/cpu/(\d+)/0/", b["name"])
    if g:
        m[int(g.group(1))] = b["real_time"]
rows = [json.loads(l) for l in open(f"{out}/torch.jsonl")]
r0 = rows[0]
print(f"\nMobileNetV2 224x224 forward, float32, CPU, {threads} threads; "
      f"torch {r0['torch']} (mkldnn {r0['mkldnn']}, {r0['blas']})")
print(f"{'batch':>5} {'mirad ms':>10} {'torch ms':>10} {'torch/mirad':>12} {'mirad img/s':>12}")
for r in rows:
    b = r["batch"]
    if b in m:
        print(f"{b:>5} {m[b]:>10.2f} {r['ms']:>10.2f} {r['ms'] / m[b]:>11.2f}x {1e3 * b / m[b]:>12.1f}")
PY
