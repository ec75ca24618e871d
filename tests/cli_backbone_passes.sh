#!/usr/bin/env bash
# `mirad clean` runs the backbone once per training image, its evidence heatmaps included (they
# score the job's own feature cache), and not at all with --features: clean --json's
# backbone_passes. Usage: cli_backbone_passes.sh MIRAD WORKDIR. Skips (77) without the default
# backbone.
set -u
MIRAD=$1
WORK=$2
fail() {
  echo "FAIL: $*"
  exit 1
}
models=${MIRAD_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mirad/models}
if [ ! -f "$models/efficientnet_lite0/weights.safetensors" ]; then
  echo "SKIP: the default backbone is not converted (tools/setup.sh)"
  exit 77
fi
rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK" || exit 1
# 8 good training images and 2 moved-in defects: 10 training images.
"$MIRAD" synth --out syn --categories wood --procedural --train 8 --test-good 2 --test-defect 2 \
  --size 128 --seed 1 >/dev/null || fail "synth failed"
"$MIRAD" contaminate syn/wood --ratio 0.25 --seed 1 --manifest m.json >/dev/null ||
  fail "contaminate failed"
# refine.k=0 puts tau at Q3, so some images are rejected and get a heatmap.
FAST=(--data syn/wood --contamination m.json --set train.budget=8 --set refine.folds=2
      --set refine.max_rounds=1 --set refine.k=0 --threads 1 --json)
"$MIRAD" clean "${FAST[@]}" --out computed >computed.json || fail "clean failed"
"$MIRAD" embed syn/wood/train syn/wood/test --out f.safetensors >/dev/null || fail "embed failed"
"$MIRAD" clean "${FAST[@]}" --features f.safetensors --out reused >reused.json ||
  fail "clean --features failed"
python3 - <<'PY' || fail "backbone passes"
import json, sys
ok = True
for name, want in (("computed", 10), ("reused", 0)):
    j = json.load(open(f"{name}.json"))
    maps = [r for r in j["rejected"] if "heatmap" in r]
    print(f"{name}: {j['images']} images, backbone_passes {j['backbone_passes']}, "
          f"{len(maps)} heatmaps of {len(j['rejected'])} rejected")
    ok &= j["images"] == 10 and j["backbone_passes"] == want
    ok &= len(maps) > 0 and len(maps) == len(j["rejected"])
sys.exit(0 if ok else 1)
PY
echo "PASS"
