#!/usr/bin/env bash
# Behaviour-identity check for refactors: trains one generated, contaminated category with a given
# mirad binary in the four method corners (plain and MAML, in-sample and cross-fit scoring), then
# runs a clean, and prints the SHA-256 of every model file and cleaning result, with the wall-clock
# fields (keys ending in "seconds") removed from the JSON first. Run it with the binary from before
# and after a change, on the same machine and thread count, and diff the two outputs:
#
#   tools/identity_check.sh OLD/mirad > before.txt
#   tools/identity_check.sh build/tools/mirad > after.txt
#   diff before.txt after.txt && echo identical
#
# About 3 min on 2 cores. The features come from the binary under test too (embed), so the
# backbone is part of the check.
set -euo pipefail
bin="$(realpath "${1:?usage: tools/identity_check.sh MIRAD_BINARY}")"
threads="${THREADS:-2}"
# One fixed folder, not mktemp: the dataset's paths are recorded in the model and cleaning files.
tmp="${TMPDIR:-/tmp}/mirad-identity"
rm -rf "$tmp" && mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

q() { "$bin" "$@" >/dev/null 2>"$tmp/last.err" || { cat "$tmp/last.err" >&2; exit 1; }; }
# JSON with the timing fields removed, keys sorted: what must not change.
stable_json() {
  python3 - "$1" <<'EOF'
import json, sys
def strip(j):
    if isinstance(j, dict):
        return {k: strip(v) for k, v in j.items() if not k.endswith("seconds")}
    return [strip(v) for v in j] if isinstance(j, list) else j
print(json.dumps(strip(json.load(open(sys.argv[1]))), sort_keys=True))
EOF
}
hash_file() { sha256sum "$1" | cut -d' ' -f1; }
hash_json() { stable_json "$1" | sha256sum | cut -d' ' -f1; }

q synth --procedural --categories wood --size 128 --train 40 --test-good 8 --test-defect 4 \
  --seed 3 --out "$tmp/ds" --threads "$threads"
cat="$tmp/ds/wood"
q contaminate "$cat" --ratio 0.2 --seed 1 --manifest "$tmp/manifest.json"
q embed "$cat/train" "$cat/test" --out "$tmp/features.safetensors"
echo "features $(hash_file "$tmp/features.safetensors")"

fast=(--set train.budget=96 --set refine.folds=3 --set refine.max_rounds=3)
for mode in plain maml; do
  for scoring in in_sample cross_fit; do
    out="$tmp/m_${mode}_$scoring"
    q train --data "$cat" --contamination "$tmp/manifest.json" --features "$tmp/features.safetensors" \
      --threads "$threads" --seed 5 "${fast[@]}" --set "train.mode=$mode" \
      --set "refine.scoring=$scoring" --out "$out"
    echo "$mode/$scoring flow.safetensors $(hash_file "$out/flow.safetensors")"
    echo "$mode/$scoring config.json $(hash_json "$out/config.json")"
  done
done

q clean --data "$cat" --contamination "$tmp/manifest.json" --features "$tmp/features.safetensors" --threads "$threads" --seed 5 \
  "${fast[@]}" --out "$tmp/clean"
echo "clean clean.json $(hash_json "$tmp/clean/clean.json")"
echo "clean rejected.csv $(hash_file "$tmp/clean/rejected.csv")"
for png in "$tmp"/clean/heatmaps/*.png; do
  [ -e "$png" ] && echo "clean $(basename "$png") $(hash_file "$png")"
done
