#!/usr/bin/env bash
# The one script for a lent CUDA machine: build with CUDA (or, where the device lacks mirad's
# build dependencies, unpack the prebuilt .gpu-bundle.tar.xz made by tools/gpu_bundle.sh), run
# every cuda-labelled test program, run the GPU benchmarks and the demo on the device, write a
# report to $OUT (or ./out) and print a short table last. Exit status is non-zero when any
# test fails or is skipped (on a GPU machine a skipped CUDA test is a failure).
set -uo pipefail
cd "$(dirname "$0")/.."
# Per-test logs go to a work folder; $OUT (or ./out) gets the few files worth keeping, since
# the device tool returns at most 8 files.
final="${OUT:-$PWD/out}"
out=$(mktemp -d /tmp/mirad-gpu-check.XXXXXX)
mkdir -p "$final"
log="$out/gpu_check.log"
exec > >(tee "$log") 2>&1
echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

bin="" how=""
if cmake -S . -B build-gpu -G Ninja -DMIRAD_CUDA_ARCHITECTURES="${MIRAD_ARCH:-90}" \
     >"$out/configure.log" 2>&1 && cmake --build build-gpu -j "$(nproc)" >"$out/build.log" 2>&1; then
  bin="build-gpu/tests" tools="build-gpu/tools" how="built on the device"
elif [ -f .gpu-bundle.tar.xz ]; then
  b=/tmp/mirad-gpu-bundle
  rm -rf "$b" && mkdir -p "$b" && tar -C "$b" -xJf .gpu-bundle.tar.xz
  bin="$b/bin" tools="$b/bin"
  export LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64:/usr/local/cuda/lib:${LD_LIBRARY_PATH:-}"
  how="prebuilt bundle, commit $(cat "$b/COMMIT"), $(cat "$b/NVCC"), sm_$(cat "$b/ARCH") (device build failed: see configure.log)"
  [ -d "$b/shared" ] && export MIRAD_SHARED="$b/shared"
  [ -d "$b/cache" ] && export XDG_CACHE_HOME="$b/cache"
else
  echo "no CUDA build possible and no .gpu-bundle.tar.xz"; exit 2
fi
echo "== build: $how"
# cuDNN: the system's, else the one PyTorch's pip wheels bring (nvidia-cudnn-cu13).
if ! ldconfig -p 2>/dev/null | grep -q 'libcudnn.so.9'; then
  cudnn_lib=$(python3 -c 'import nvidia.cudnn, os; print(os.path.join(list(nvidia.cudnn.__path__)[0], "lib"))' 2>/dev/null || true)
  [ -n "$cudnn_lib" ] && export LD_LIBRARY_PATH="$cudnn_lib:${LD_LIBRARY_PATH:-}" && echo "cuDNN from $cudnn_lib"
fi
export MIRAD_SHARED="${MIRAD_SHARED:-$PWD/../shared}"

status=0
rows=()
echo "== cuda tests"
for t in "$bin"/test_cuda_*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  name=$(basename "$t")
  "$t" --gtest_output="json:$out/$name.json" >"$out/$name.log" 2>&1
  rc=$?
  read -r total failed skipped < <(python3 - "$out/$name.json" <<'PY'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception:
    print(0, 1, 0); sys.exit()
t = f = s = 0
for suite in j["testsuites"]:
    for c in suite["testsuite"]:
        t += 1
        if c.get("failures"): f += 1
        elif c.get("result") == "SKIPPED": s += 1
print(t, f, s)
PY
)
  verdict=ok
  if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then verdict=FAIL status=1; fi
  if [ "$skipped" -ne 0 ]; then verdict="$verdict (skipped $skipped)" status=1; fi
  rows+=("$(printf '%-26s %5s %6s %7s  %s' "$name" "$total" "$failed" "$skipped" "$verdict")")
  tail -3 "$out/$name.log"
done

echo "== benchmarks"
"$tools/mirad_bench" --benchmark_filter='cuda|Cuda' --benchmark_min_time=0.1 \
  --benchmark_format=console --benchmark_out="$out/bench.json" --benchmark_out_format=json \
  2>&1 | tee "$out/bench.txt"

echo "== mirad bench on the device (JSON report: decode, backbone, flow and MAML steps, quantiles, a 220-image clean job)"
"$tools/mirad" bench --device cuda --min-seconds 0.2 --clean-images 200 --json \
  --out "$out/mirad_bench.json" >/dev/null 2>"$out/mirad_bench.err" || status=1
bench_row=$(python3 - "$out/mirad_bench.json" <<'PY' || echo "mirad bench failed: $(tail -2 "$out/mirad_bench.err")"
import json, sys
d = json.load(open(sys.argv[1]))
def g(*k):
    x = d
    for i in k:
        x = x.get(i, {}) if isinstance(x, dict) else {}
    return x
parts = []
b = g("backbone")
if "batch64" in b: parts.append(f"backbone {b['batch1']['images_per_second']:.0f}/{b['batch16']['images_per_second']:.0f}/{b['batch64']['images_per_second']:.0f} img/s at batch 1/16/64")
for name, p in b.get("precisions", {}).items():
    if "batch64" in p: parts.append(f"backbone {name} {p['batch1']['images_per_second']:.0f}/{p['batch16']['images_per_second']:.0f}/{p['batch64']['images_per_second']:.0f} img/s")
for c in g("flow_step").get("cases", []): parts.append(f"flow D={c['dim']} fwd+bwd {c['forward_backward_ms']:.2f} ms ({c['gemm_gflops']:.0f} GFLOP/s)")
for c in g("maml_step").get("cases", []): parts.append(f"MAML D={c['dim']} 2nd/1st order {c['ratio']:.2f}x")
q = g("quantiles")
if "100M" in q: parts.append(f"quartiles 100M {q['100M']['ms']:.1f} ms")
c = g("clean")
if "seconds" in c: parts.append(f"clean {c['images']} images {c['seconds']:.1f} s (features {c['feature_seconds']:.1f} s)")
for k, v in d.items():
    if isinstance(v, dict) and "error" in v: parts.append(f"{k} ERROR {v['error']}")
print("; ".join(parts))
PY
)
echo "$bench_row"

echo "== tensor-core arithmetic against FP32 (the flow's GEMMs: train.precision tf32/bf16; the backbone: features.precision fp16/bf16): image AUROC of the whole method (2 generated categories; in-sample scoring, to fit the device time)"
tf32_row=""
for cat in wood tiles; do
  d=/tmp/mirad-tf32
  "$tools/mirad" synth --out $d --categories $cat --train 80 --test-good 20 --test-defect 6 \
    --json >/dev/null 2>&1 || status=1
  "$tools/mirad" contaminate $d/$cat --ratio 0.1 --manifest $d/$cat.json >/dev/null 2>&1
  for prec in train.precision=fp32 train.precision=tf32 train.precision=bf16 \
              features.precision=fp16 features.precision=bf16; do
    "$tools/mirad" train --data $d/$cat --contamination $d/$cat.json --device cuda \
      --set $prec --set refine.scoring=in_sample --out $d/$cat-$prec --json >/dev/null 2>>"$out/tf32.err" || status=1
    a=$("$tools/mirad" eval --model $d/$cat-$prec --data $d/$cat --contamination $d/$cat.json --json \
      2>>"$out/tf32.err" | python3 -c "import json,sys; t=json.load(sys.stdin)['test']; print(f\"{t['image_auroc']:.4f}/{t['pixel_auroc']:.4f}\")" 2>/dev/null || echo failed)
    tf32_row="$tf32_row $cat $prec $a;"
  done
done
echo "image/pixel AUROC:$tf32_row"

echo "== demo on the device (default backbone)"
"$tools/mirad" demo --device cuda --json >"$out/demo.json" 2>"$out/demo.err" || status=1
demo_row=$(python3 - "$out/demo.json" <<'PY' || echo "demo failed: $(tail -2 "$out/demo.err")"
import json, sys
d = json.load(open(sys.argv[1]))
print(f"demo on {d['device']}: {d['rejected_truly_defective']}/{d['contaminated']} contaminants "
      f"rejected ({len(d['rejected'])} rejected), image AUROC {d['before']['image_auroc']:.4f} -> "
      f"{d['after']['image_auroc']:.4f}, pixel AUROC {d['before']['pixel_auroc']:.4f} -> "
      f"{d['after']['pixel_auroc']:.4f}, {d['seconds']:.1f} s")
PY
)
echo "$demo_row"

{
  echo "# gpu_check report"
  echo
  echo "- date: $(date -u +%FT%TZ)"
  echo "- device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
  echo "- build: $how"
  echo "- mirad bench: $bench_row"
  echo "- tensor-core arithmetic vs FP32, image/pixel AUROC (generated, r = 0.1):$tf32_row"
  echo "- $demo_row"
  echo
  echo '```'
  printf '%-26s %5s %6s %7s  %s\n' "test program" tests failed skipped verdict
  printf '%s\n' "${rows[@]}"
  echo '```'
  echo
  echo '```'
  python3 - "$out/bench.json" <<'PY' || true
import json, sys
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    if b.get("error_occurred"): continue
    extra = ""
    if "items_per_second" in b: extra = f"{b['items_per_second']/1e6:10.2f} M items/s"
    print(f"{b['name']:58} {b['real_time']:10.3f} {b['time_unit']}  {extra}")
PY
  echo '```'
} > "$out/gpu_report.md"

echo
echo "== summary ($how)"
printf '%-26s %5s %6s %7s  %s\n' "test program" tests failed skipped verdict
printf '%s\n' "${rows[@]}"
echo "report: $final/gpu_report.md; overall: $([ $status -eq 0 ] && echo PASS || echo FAIL)"
# At most 8 files come back: the report, the log, both benchmark JSONs, the demo's, and up to
# three failing test programs' logs.
cp "$out/gpu_report.md" "$out/bench.json" "$out/mirad_bench.json" "$out/demo.json" "$final/" 2>/dev/null
for f in $(grep -l -E "FAILED|Failure" "$out"/test_cuda_*.log 2>/dev/null | head -3); do cp "$f" "$final/"; done
sleep 1  # let tee flush the log before it is copied
cp "$log" "$final/"
exit $status
