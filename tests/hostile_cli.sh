#!/usr/bin/env bash
# Issue 7's hostile-input regressions through the command line, one case per run:
#   hostile_cli.sh MIRAD WORKDIR CASE
# Each case builds its inputs under WORKDIR/CASE, runs mirad, and checks the exit status, the
# message, and that no input or odd output target was touched. The exit status is the verdict.
set -u
MIRAD=$1
CASE=$3
WORK=$2/$CASE
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK" || exit 1

fail() {
  echo "FAIL [$CASE]: $*"
  exit 1
}

# run_expect RC PATTERN CMD...: CMD must exit with RC and print PATTERN (grep -E).
run_expect() {
  local want=$1 pattern=$2
  shift 2
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  [ "$rc" = "$want" ] || fail "exit status $rc, expected $want"
  grep -qE -- "$pattern" <<<"$out" || fail "output lacks /$pattern/"
}

# run_usage_error PATTERN CMD...: CLI11 refuses the option with exit status 2, as every other
# usage error (issue 13, finding 16: its own codes 105-110 leaked out), and prints PATTERN.
run_usage_error() {
  run_expect 2 "$@"
}

# Cases that train or score need the converted default backbone; without it they skip (77).
need_backbone() {
  local models=${MIRAD_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mirad/models}
  if [ ! -f "$models/efficientnet_lite0/weights.safetensors" ]; then
    echo "SKIP [$CASE]: the default backbone is not converted (tools/setup.sh)"
    exit 77
  fi
}

# Training as small as it gets: a few seconds on one core.
FAST=(--set train.budget=8 --set refine.folds=2 --set refine.max_rounds=1 --threads 1)

# A generated category: 8 training images at 128 px, 2 good and 5 defect test images ($DS).
tiny_dataset() {
  need_backbone
  "$MIRAD" synth --out syn --categories wood --procedural --train 8 --test-good 2 \
    --test-defect 1 --size 128 --seed 1 >/dev/null || fail "synth failed"
  DS=syn/wood
}

# tiny_dataset and a model trained on it (m/).
tiny_model() {
  tiny_dataset
  "$MIRAD" train --data "$DS" --out m "${FAST[@]}" >/dev/null 2>&1 || fail "train failed"
}

# A file name that is not valid UTF-8.
BAD_NAME=$(printf 'bad\377.png')

# Runs "$@" without root's right to write anywhere (as nobody when run as root).
unprivileged() {
  if [ "$(id -u)" = 0 ]; then
    setpriv --reuid=65534 --regid=65534 --clear-groups "$@"
  else
    "$@"
  fi
}

# hidden_leftovers DIR: the names of hidden entries in DIR (a run's temporaries).
hidden_leftovers() {
  find "$1" -mindepth 1 -maxdepth 1 -name '.*' -printf '%f\n'
}

# A backbone folder that is never loaded: every case below is refused before that.
fake_backbone() {
  mkdir -p bb
  echo '{}' >bb/graph.json
  echo weights >bb/weights.safetensors
}

# An MVTec-layout category of placeholder files (contaminate reads no pixels without
# --validate): 6 good training images, 2 good and 10 defect test images with masks.
mvtec_dataset() {
  mkdir -p ds/train/good ds/test/good ds/test/crack ds/ground_truth/crack
  for i in 0 1 2 3 4 5; do echo x >ds/train/good/0$i.png; done
  for i in 0 1; do echo x >ds/test/good/0$i.png; done
  for i in 0 1 2 3 4 5 6 7 8 9; do
    echo x >ds/test/crack/0$i.png
    echo x >ds/ground_truth/crack/0${i}_mask.png
  done
}

# 1x1 gray PNGs, black and white (KSDD2 reads its labels from the masks).
BLACK_PNG=iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg==
WHITE_PNG=iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGP4DwABAQEAsTj2FAAAAABJRU5ErkJggg==
png() { base64 -d <<<"$1" >"$2"; }

# The cases that train need the default backbone that tools/setup.sh converts: skip (77) without.
need_backbone() {
  local models=${MIRAD_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/mirad/models}
  if [ ! -f "$models/efficientnet_lite0/weights.safetensors" ]; then
    echo "SKIP [$CASE]: the default backbone is not converted"
    exit 77
  fi
}

# A tiny contaminated category (test_resume.py's): procedural 128-px carpet, 30 training
# images and 6 moved-in defects, so refinement takes more than one round. TRAIN: its train
# command, fast settings, JSON output.
tiny_category() {
  need_backbone
  "$MIRAD" synth --out . --categories carpet --procedural --train 30 --test-good 4 \
    --test-defect 4 --size 128 --seed 5 >/dev/null || fail "synth failed"
  "$MIRAD" contaminate carpet --ratio 0.2 --seed 2 --manifest m.json >/dev/null ||
    fail "contaminate failed"
  TRAIN=(train --data carpet --contamination m.json --set train.budget=96 --set refine.folds=3
         --seed 4 --json)
}

# mask_png PATH WIDTH HEIGHT LEVELS: an 8-bit gray PNG, written with Python's standard library
# alone: the left half 0, the right half cycling through LEVELS (comma-separated: "255", "128,200").
mask_png() {
  python3 - "$@" <<'PY' || fail "cannot write $1"
import struct, sys, zlib
path, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
levels = [int(v) for v in sys.argv[4].split(",")]
rows = b"".join(b"\0" + bytes(0 if x < w // 2 else levels[(x + y) % len(levels)] for x in range(w))
                for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
PY
}
# png_size PATH: "WIDTH HEIGHT" from the PNG header.
png_size() {
  python3 -c 'import struct, sys; print(*struct.unpack(">II", open(sys.argv[1], "rb").read(24)[16:24]))' "$1"
}
# edit_json FILE EDIT: runs the Python statement EDIT on the document of FILE, bound to j, and
# writes it back (how the probes forge a config.json or checkpoint.json that mirad must refuse).
edit_json() {
  python3 - "$1" "$2" <<'PY' || fail "editing $1 failed"
import json, sys
j = json.load(open(sys.argv[1]))
exec(sys.argv[2])
json.dump(j, open(sys.argv[1], "w"))
PY
}

# tiny_category, then a train --checkpoint ck killed (SIGKILL) once round 1 is checkpointed
# and the rounds are not over.
checkpoint_after_round_1() {
  tiny_category
  "$MIRAD" "${TRAIN[@]}" --out killed --checkpoint ck >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 6000); do
    [ -f ck/checkpoint.json ] && break
    kill -0 $pid 2>/dev/null || fail "the run ended before writing a checkpoint"
    sleep 0.05
  done
  kill -9 $pid
  wait $pid 2>/dev/null
  [ -f ck/checkpoint.json ] || fail "no checkpoint"
  grep -q '"loop_done":false' ck/checkpoint.json || fail "the rounds were over at round 1"
}

case $CASE in
unknown_subcommand)  # bug 12: was "A subcommand is required"
  run_expect 2 "unknown subcommand 'frobnicate' \(known: .*embed" "$MIRAD" frobnicate
  ;;
embed_out_in_backbone)  # bug 1: the backbone's weights were replaced by features
  fake_backbone
  echo x >a.png
  run_expect 2 "refusing to write bb/weights.safetensors inside the input folder bb" \
    "$MIRAD" embed a.png --backbone bb --taps 20 --out bb/weights.safetensors
  [ "$(cat bb/weights.safetensors)" = weights ] || fail "the weights changed"
  ;;
embed_duplicate_taps)  # bug 12: --taps 20,20 computed twice, wrote one tensor
  fake_backbone
  echo x >a.png
  run_expect 2 "--taps: '20' is listed twice" \
    "$MIRAD" embed a.png --backbone bb --taps 20,20 --out o.safetensors
  ;;
embed_empty_out)  # bug 12: was ": cannot rename ./..XXXXXX"
  fake_backbone
  echo x >a.png
  run_usage_error "--out: must not be empty" "$MIRAD" embed a.png --backbone bb --out ""
  ;;
embed_fifo_input)  # bug 5: a FIFO input blocked forever
  fake_backbone
  mkfifo in.png
  run_expect 2 "in.png: is a FIFO" "$MIRAD" embed in.png --backbone bb --out o.safetensors
  ;;
embed_device_input)  # bug 5: /dev/zero grew to 6.5 GB (checked here on /dev/null, as harmless)
  fake_backbone
  run_expect 2 "/dev/null: is a character device" \
    "$MIRAD" embed /dev/null --backbone bb --out o.safetensors
  ;;
embed_symlink_loop)  # bug 12: was "no such file or directory"
  fake_backbone
  ln -s loop.png loop.png
  run_expect 2 "loop.png: symbolic link loop" "$MIRAD" embed loop.png --backbone bb --out o.safetensors
  ;;
embed_invalid_utf8_name)  # bug 6: exit 3 after all the work, from the metadata's JSON
  fake_backbone
  mkdir imgs
  echo x >"imgs/$(printf 'bad\377.png')"
  run_expect 2 'imgs/bad\\xff.png is not valid UTF-8' \
    "$MIRAD" embed imgs --backbone bb --out o.safetensors
  [ ! -e o.safetensors ] || fail "an output was written"
  ;;
embed_deep_graph)  # bug 3: SIGSEGV (stack overflow) on 100,000 nested arrays
  fake_backbone
  echo x >a.png
  {
    printf '{"format": '
    head -c 100000 /dev/zero | tr '\0' '['
    head -c 100000 /dev/zero | tr '\0' ']'
    printf ', "input": "x", "output": "y", "ops": []}'
  } >bb/graph.json
  run_expect 2 "graph.json: arrays/objects nested deeper than 64" \
    "$MIRAD" embed a.png --backbone bb --out o.safetensors
  ;;
contaminate_manifest_symlink)  # bug 2: the rename replaced the link
  mvtec_dataset
  echo keep >target.json
  ln -s target.json link.json
  run_expect 2 "link.json: is a symbolic link; refusing to replace it" \
    "$MIRAD" contaminate ds --count 2 --manifest link.json
  [ -L link.json ] && [ "$(cat target.json)" = keep ] || fail "the link or its target changed"
  ;;
contaminate_manifest_fifo)  # bug 2: stands for /dev/full, turned into a regular file as root
  mvtec_dataset
  mkfifo m.json
  run_expect 2 "m.json: exists and is a FIFO" "$MIRAD" contaminate ds --count 2 --manifest m.json
  [ -p m.json ] || fail "the FIFO was replaced"
  ;;
contaminate_seed_negative)  # bug 10: -1 became 18446744073709551615
  mvtec_dataset
  run_usage_error "--seed: must not be negative" "$MIRAD" contaminate ds --count 2 --seed -1
  ;;
contaminate_seed_too_big)  # bug 10: 2^64 became 18446744073709551615
  mvtec_dataset
  run_usage_error "--seed: '18446744073709551616' is out of range" \
    "$MIRAD" contaminate ds --count 2 --seed 18446744073709551616
  ;;
contaminate_ratio_nan)  # bug 10: CLI::Range lets NaN through
  mvtec_dataset
  run_usage_error "--ratio: must be a finite number" "$MIRAD" contaminate ds --ratio nan
  ;;
contaminate_check_edited_seed)  # bug 7: --check re-applied the moves, never re-drew them
  mvtec_dataset
  run_expect 0 "manifest: m.json" "$MIRAD" contaminate ds --count 3 --seed 3 --manifest m.json
  run_expect 0 "reproduces the split" "$MIRAD" contaminate ds --check m.json
  sed 's/"seed": 3$/"seed": 4/' m.json >edited.json
  run_expect 2 "re-drawing with seed 4, count 3 gives" "$MIRAD" contaminate ds --check edited.json
  ;;
contaminate_check_edited_mask)  # bug 7: an edited mask path "reproduced the split"
  mvtec_dataset
  run_expect 0 "manifest: m.json" "$MIRAD" contaminate ds --count 3 --seed 3 --manifest m.json
  sed 's/_mask.png/_other.png/' m.json >edited.json
  run_expect 2 "moved\[0\] is .*_other.png" "$MIRAD" contaminate ds --check edited.json
  ;;
contaminate_invalid_utf8_name)  # bug 6: exit 3 ("internal error") from the manifest's JSON
  mkdir -p ds/train/good ds/test/crack
  for i in 0 1 2; do echo x >ds/train/good/0$i.png; done
  echo x >"ds/test/crack/$(printf 'bad\377.png')"
  run_expect 2 'bad\\xff.png is not valid UTF-8' \
    "$MIRAD" contaminate ds --count 1 --manifest m.json
  [ ! -e m.json ] || fail "a manifest was written"
  ;;
contaminate_ksdd2_summary)  # bug 12: "train 3 good" when 1 of the 3 is defective
  mkdir -p ds/train ds/test
  for i in 1 3; do png $BLACK_PNG ds/train/$i.png; png $BLACK_PNG ds/train/${i}_GT.png; done
  png $BLACK_PNG ds/train/2.png
  png $WHITE_PNG ds/train/2_GT.png
  png $BLACK_PNG ds/test/4.png
  png $WHITE_PNG ds/test/4_GT.png
  run_expect 0 "train 3 images \(1 defective\) -> 4 images \(2 defective" \
    "$MIRAD" contaminate ds --layout ksdd2 --count 1
  ;;
synth_out_proc)  # bug 11: "internal error: filesystem error" (exit 3)
  run_expect 2 "/proc/mirad-x: cannot create the folder" \
    "$MIRAD" synth --out /proc/mirad-x --categories wood --procedural --train 1 --test-good 1 \
    --test-defect 1 --size 64
  ;;
# ---- issue 13, the second probe's findings 2, 4, 5, 7-10, 15 and 16 -------------------------
predict_json_invalid_utf8_name)  # finding 2: exit 3, json type_error.316, no predictions.json
  tiny_model
  mkdir imgs
  cp "$DS/test/good/000.png" "imgs/$BAD_NAME"
  run_expect 2 'imgs/bad\\xff.png is not valid UTF-8' "$MIRAD" predict --model m imgs --json
  run_expect 2 'imgs/bad\\xff.png is not valid UTF-8' "$MIRAD" predict --model m imgs --out P
  [ ! -e P ] || fail "an output was written"
  run_expect 0 "0 of 1 anomalous|1 of 1 anomalous" "$MIRAD" predict --model m imgs
  ;;
eval_json_invalid_utf8_name)  # finding 2: exit 3 from the report's JSON, after all the work
  tiny_model
  cp -r "$DS" ds2
  mv ds2/test/good/000.png "ds2/test/good/$BAD_NAME"
  run_expect 2 'bad\\xff.png is not valid UTF-8' "$MIRAD" eval --model m --data ds2 --json
  run_expect 2 'bad\\xff.png is not valid UTF-8' "$MIRAD" eval --model m --data ds2 --out e.json
  [ ! -e e.json ] || fail "a report was written"
  ;;
train_out_keeps_foreign_files)  # finding 4: the model folder was replaced whole, NOTES.txt gone
  tiny_dataset
  run_expect 0 "trained on" "$MIRAD" train --data "$DS" --out m "${FAST[@]}"
  echo "my notes" >m/NOTES.txt
  run_expect 2 "m: holds files that are not part of a mirad model folder \(NOTES.txt\)" \
    "$MIRAD" train --data "$DS" --out m "${FAST[@]}"
  [ "$(cat m/NOTES.txt)" = "my notes" ] || fail "NOTES.txt was lost"
  rm m/NOTES.txt
  run_expect 0 "trained on" "$MIRAD" train --data "$DS" --out m "${FAST[@]}"
  ;;
embed_out_over_model_file)  # finding 5: embed replaced a model's flow.safetensors (exit 0)
  tiny_model
  cp m/flow.safetensors flow.orig
  run_expect 2 "m/flow.safetensors: exists and is not a mirad features file" \
    "$MIRAD" embed "$DS/train" --out m/flow.safetensors
  cmp -s m/flow.safetensors flow.orig || fail "the model's flow file changed"
  run_expect 0 "embedded 8 images" "$MIRAD" embed "$DS/train" --out f.safetensors
  run_expect 0 "embedded 8 images" "$MIRAD" embed "$DS/train" --out f.safetensors
  ;;
contaminate_manifest_over_config)  # finding 5: --manifest m/config.json overwrote it (exit 0)
  mvtec_dataset
  mkdir m
  echo '{"format": "mirad-detector"}' >m/config.json
  run_expect 2 "m/config.json: exists and is not a contamination manifest" \
    "$MIRAD" contaminate ds --count 2 --manifest m/config.json
  [ "$(cat m/config.json)" = '{"format": "mirad-detector"}' ] || fail "config.json changed"
  run_expect 0 "manifest: c.json" "$MIRAD" contaminate ds --count 2 --manifest c.json
  run_expect 0 "manifest: c.json" "$MIRAD" contaminate ds --count 3 --manifest c.json
  ;;
clean_export_not_exact)  # finding 7: a second --export kept the images the first run kept
  tiny_dataset
  run_expect 0 "kept" "$MIRAD" clean --data "$DS" --out C --export kept "${FAST[@]}"
  before=$(find kept -type f | sort | md5sum)
  run_expect 2 "--export kept: exists, is not empty" \
    "$MIRAD" clean --data "$DS" --out C2 --export kept "${FAST[@]}"
  [ "$(find kept -type f | sort | md5sum)" = "$before" ] || fail "kept/ changed"
  [ ! -e C2 ] || fail "C2 was written though the run was refused"
  ;;
clean_out_rerun_replaces_heatmaps)  # finding 8: a rerun left the first run's heatmaps
  tiny_dataset
  run_expect 0 "kept" "$MIRAD" clean --data "$DS" --out C "${FAST[@]}"
  mkdir -p C/heatmaps
  cp "$DS/train/good/000.png" C/heatmaps/9999_stale.png
  run_expect 0 "kept" "$MIRAD" clean --data "$DS" --out C "${FAST[@]}"
  [ ! -e C/heatmaps/9999_stale.png ] || fail "a stale heatmap survived the rerun"
  echo mine >C/NOTES.txt
  run_expect 2 "holds files that are not part of a mirad clean output .*NOTES.txt" \
    "$MIRAD" clean --data "$DS" --out C "${FAST[@]}"
  [ -e C/NOTES.txt ] && [ -e C/clean.json ] || fail "the earlier output changed"
  ;;
predict_out_rerun_replaces_maps)  # finding 8: a rerun left the first run's maps
  tiny_model
  run_expect 0 "of 7 anomalous" "$MIRAD" predict --model m "$DS/test" --out P
  [ "$(ls P/maps | wc -l)" = 7 ] || fail "expected 7 maps"
  run_expect 0 "of 1 anomalous" "$MIRAD" predict --model m "$DS/test/good/000.png" --out P
  [ "$(ls P/maps | wc -l)" = 1 ] || fail "stale maps: $(ls P/maps | wc -l) in P/maps"
  [ -z "$(hidden_leftovers .)" ] || fail "leftovers: $(hidden_leftovers .)"
  ;;
predict_nothing_scored)  # finding 9: "0 of 2 anomalous", exit 0
  tiny_model
  echo x >b1.png
  echo x >b2.png
  run_expect 2 "none of the 2 images could be scored" "$MIRAD" predict --model m b1.png b2.png
  run_expect 2 "b1.png +error: " "$MIRAD" predict --model m b1.png b2.png --out P
  [ ! -e P ] || fail "an output of nothing was written"
  ;;
eval_nothing_scored)  # finding 9: "0 images" and NaN metrics, exit 0
  tiny_model
  cp -r "$DS" ds2
  for f in ds2/test/*/*.png; do echo x >"$f"; done
  run_expect 2 "none of the 7 test images could be scored" "$MIRAD" eval --model m --data ds2
  run_expect 2 "skipped \(cannot decode\): ds2/test/good/000.png: " \
    "$MIRAD" eval --model m --data ds2
  ;;
eval_lists_skipped)  # finding 9: text output never listed the skipped images
  tiny_model
  cp -r "$DS" ds2
  echo x >ds2/test/good/001.png
  run_expect 0 "skipped \(cannot decode\): ds2/test/good/001.png: " \
    "$MIRAD" eval --model m --data ds2
  ;;
clean_lists_skipped)  # finding 9: clean's text output never listed the skipped images
  tiny_dataset
  echo x >"$DS/train/good/003.png"
  run_expect 0 "skipped \(cannot decode\): .*003.png: " \
    "$MIRAD" clean --data "$DS" --out C "${FAST[@]}"
  ;;
model_std_zero)  # finding 9: a model with backbone.std[0] = 0 loaded and failed every image
  tiny_model
  edit_json m/config.json 'j["backbone"]["std"][0] = 0'
  run_expect 2 "backbone.std\[0\] is 0; each std must be > 0" \
    "$MIRAD" predict --model m "$DS/test/good/000.png"
  ;;
clean_kill_leaves_no_half_output)  # finding 10: model/ and heatmaps/ without clean.json
  tiny_dataset
  for sig in TERM KILL; do
    "$MIRAD" clean --data "$DS" --out C "${FAST[@]}" --set refine.k=0 >/dev/null 2>&1 &
    pid=$!
    # Until the output phase begins (the model is written first), then the signal.
    for _ in $(seq 3000); do
      compgen -G "C/model" >/dev/null || compgen -G ".C.mirad-*/model" >/dev/null && break
      kill -0 $pid 2>/dev/null || break
      sleep 0.01
    done
    kill -$sig $pid 2>/dev/null
    wait $pid
    [ ! -e C ] || [ -e C/clean.json ] || fail "SIG$sig left a half output: $(ls C)"
    # The next signal must wait for its own run's output phase, not see this run's leftover
    # (that the last run below removes it is checked with the SIGKILL one).
    [ $sig = KILL ] || rm -rf .C.mirad-*
  done
  run_expect 0 "kept" "$MIRAD" clean --data "$DS" --out C "${FAST[@]}"
  [ -e C/clean.json ] && [ -e C/model/config.json ] || fail "incomplete output"
  [ -z "$(hidden_leftovers .)" ] || fail "stale temporaries: $(hidden_leftovers .)"
  ;;
train_checkpoint_is_out)  # finding 15: refused only after all the training
  tiny_dataset
  run_expect 2 "--out m and --checkpoint m are the same path" \
    timeout 20 "$MIRAD" train --data "$DS" --out m --checkpoint m --set train.budget=100000
  run_expect 2 "--out m and --checkpoint m/ck: one lies inside the other" \
    timeout 20 "$MIRAD" train --data "$DS" --out m --checkpoint m/ck --set train.budget=100000
  run_expect 2 "--out C and --checkpoint C/ck: one lies inside the other" \
    timeout 20 "$MIRAD" clean --data "$DS" --out C --checkpoint C/ck --set train.budget=100000
  ;;
train_out_unwritable)  # finding 15: late failures, and messages without the system's reason
  tiny_dataset
  tmp=$(mktemp -d /tmp/mirad-hostile.XXXXXX)
  chmod 755 "$tmp"
  cp -r "$DS" "$tmp/ds"
  chmod -R a+rX "$tmp/ds"
  mkdir "$tmp/ro" "$tmp/rw"
  # The unprivileged user must reach the binary and a working folder: a clone may sit in a
  # private (0700) folder, as tools/fresh_check.sh's mktemp does.
  bin="$tmp/mirad"
  cp "$MIRAD" "$bin"
  chmod 755 "$bin"
  cd "$tmp" || fail "cd $tmp"
  chmod 555 "$tmp/ro"
  chmod 777 "$tmp/rw"
  run_expect 2 "cannot write into the folder $tmp/ro \(Permission denied\)" \
    unprivileged timeout 20 "$bin" train --data "$tmp/ds" --out "$tmp/ro/m" --set train.budget=100000
  run_expect 2 "cannot create a folder in $tmp/ro \(Permission denied\)" \
    unprivileged timeout 20 "$bin" clean --data "$tmp/ds" --out "$tmp/ro/C" --set train.budget=100000
  run_expect 2 "--out .*ro/sub/P: cannot create the folder .*ro/sub \(Permission denied\)" \
    unprivileged "$bin" predict --model m "$tmp/ds/test/good/000.png" --out "$tmp/ro/sub/P"
  run_expect 2 "--checkpoint $tmp/ro/ck: cannot write into $tmp/ro \(Permission denied\)" \
    unprivileged timeout 20 "$bin" train --data "$tmp/ds" --out "$tmp/rw/m" --checkpoint "$tmp/ro/ck" \
    --set train.budget=100000
  cd "$WORK" || fail "cd $WORK"
  run_expect 2 "\(Operation not permitted\)" \
    timeout 20 "$MIRAD" train --data "$DS" --out /sys/mirad-m --set train.budget=100000
  run_expect 2 "nope.*\(No such file or directory\)" \
    timeout 20 "$MIRAD" train --data "$DS" --out nope/m --set train.budget=100000
  rm -rf "$tmp"
  ;;
train_one_image)  # finding 16: "only 1 of 1 could be decoded" for an image that decodes fine
  mkdir one
  png $BLACK_PNG one/a.png
  run_expect 2 "the training set has 1 image; at least 2 are needed" \
    "$MIRAD" train --data one --out m
  ;;
train_identical_images)  # finding 16: remedies that cannot help; no word about the spread
  tiny_dataset
  mkdir same
  for i in 0 1 2 3 4 5 6 7; do cp "$DS/train/good/000.png" same/$i.png; done
  run_expect 2 "use --set refine.scoring=in_sample" \
    "$MIRAD" train --data same --out m "${FAST[@]}"
  run_expect 0 "warning: near-zero spread" \
    "$MIRAD" train --data same --out m "${FAST[@]}" --set refine.scoring=in_sample
  ;;
decode_bomb_message)  # finding 16: the message named DecodeOptions::max_pixels
  tiny_dataset
  mkdir d
  cp "$DS/train/good/000.png" "$DS/train/good/001.png" d/
  python3 - <<'PY' || fail "could not write bomb.png"
import struct, zlib
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
open("d/bomb.png", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                               chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
PY
  run_expect 2 "bomb.png: image is 30000x30000 = 900000000 pixels, above the limit of 178956970 pixels per image .*no mirad option raises it" \
    "$MIRAD" train --data d --strict --out m "${FAST[@]}"
  if grep -q DecodeOptions <<<"$("$MIRAD" train --data d --strict --out m "${FAST[@]}" 2>&1)"; then
    fail "the message names an internal option"
  fi
  ;;
cli_parse_errors_exit_2)  # finding 16: CLI11's own codes (106, 109) leaked out
  run_expect 2 "images is required" \
    "$MIRAD" predict --model m -dash.png
  run_expect 2 "--bogus" "$MIRAD" train --data x --out y --bogus
  run_expect 2 "--out is required" "$MIRAD" train --data x
  run_expect 0 "Usage" "$MIRAD" train --help
  ;;
threads_cap)  # probe 11: --threads 4096 ran predict 29 s and 1.77 GB; capped at 4x the cores
  cap=$((4 * $(nproc)))
  run_usage_error "--threads: $((cap + 1)) is above the cap of $cap \\(4x the $(nproc) cores\\)" \
    "$MIRAD" predict --model m a.png --threads $((cap + 1))
  run_expect 0 "at most 4x the cores" "$MIRAD" predict --help
  for cmd in train clean eval bench demo synth; do
    run_usage_error "--threads: 4096 is above the cap" "$MIRAD" $cmd --threads 4096
  done
  ;;
checkpoint_edited_state)  # probe 1 (SIGSEGV) and 14 (another model, exit 0) on an edited checkpoint.json
  checkpoint_after_round_1
  cp -r ck ck.orig
  edit_and_refuse() {  # PATTERN PYTHON-EDIT: the edited checkpoint is refused, nothing written
    local pattern=$1 edit=$2
    rm -rf ck && cp -r ck.orig ck
    edit_json ck/checkpoint.json "$edit"
    run_expect 2 "$pattern" "$MIRAD" "${TRAIN[@]}" --out model --checkpoint ck
    [ ! -e model ] || fail "a model was written from an edited checkpoint"
  }
  edit_and_refuse "loop_done true, final_ready true, stop_reason 'max_rounds' do not follow from" \
    'j["loop_done"] = j["final_ready"] = True'
  edit_and_refuse "loop_done true, final_ready false, stop_reason 'max_rounds' do not follow" \
    'j["loop_done"] = True'
  edit_and_refuse "retained images are not distinct ascending" \
    'j["retained"] = j["retained"][:1] + j["retained"]'
  edit_and_refuse "both retained and rejected" \
    'j["retained"] = sorted(j["retained"] + [j["rejected"][0][0]])'
  edit_and_refuse "rejected twice" 'j["rejected"].append(j["rejected"][0])'
  edit_and_refuse "rounds_done is 1000000" 'j["rounds_done"] = 1000000'
  edit_and_refuse "the retained images are not those the rounds kept" \
    'j["retained"] = j["retained"][1:]'
  # The checkpoint as written still resumes.
  rm -rf ck && cp -r ck.orig ck
  run_expect 0 '"resumed_from_round": 1' "$MIRAD" "${TRAIN[@]}" --out model --checkpoint ck
  ;;
checkpoint_second_run_refused)  # probe 6: two runs on one --checkpoint: one deleted the other's state
  tiny_category
  "$MIRAD" "${TRAIN[@]}" --set train.budget=4000 --out first --checkpoint ck >first.log 2>&1 &
  first=$!
  for _ in $(seq 1200); do [ -d ck ] && break; sleep 0.1; done
  [ -d ck ] || { kill -9 $first; fail "the first run made no checkpoint folder"; }
  run_expect 2 "checkpoint: the folder ck is in use by another mirad run" \
    timeout 120 "$MIRAD" "${TRAIN[@]}" --out second --checkpoint ck
  kill -0 $first 2>/dev/null || { cat first.log; fail "the first run did not survive the second"; }
  kill -9 $first
  wait $first 2>/dev/null
  [ ! -e second ] || fail "the refused run wrote a model"
  ;;
checkpoint_stale_temporary)  # probe 10: a SIGKILL mid-write left .checkpoint.safetensors.XXXXXX forever
  tiny_category
  mkdir ck
  head -c 4000000 /dev/zero >ck/.checkpoint.safetensors.AbC123
  echo mine >ck/notes.txt
  run_expect 0 '"stop_reason"' "$MIRAD" "${TRAIN[@]}" --set refine.max_rounds=1 --out model \
    --checkpoint ck
  [ ! -e ck/.checkpoint.safetensors.AbC123 ] || fail "the stale temporary is still there"
  [ "$(cat ck/notes.txt)" = mine ] || fail "a file of another naming was touched"
  ;;
meta_batch_over_budget)  # probe 12: meta_batch 1024 with budget 20 ran ~100x the budget
  mvtec_dataset  # placeholder images: the check comes before any decoding
  run_expect 2 "one MAML step of 1024 tasks costs 4096 gradient evaluations.*budget of 20" \
    timeout 60 "$MIRAD" train --data ds --out m --set train.mode=maml \
    --set train.meta_batch=1024 --set train.budget=20
  run_expect 2 "round_budget" \
    timeout 60 "$MIRAD" train --data ds --out m --set train.mode=maml --set train.budget=40
  [ ! -e m ] || fail "a model was written"
  ;;
model_config_contradictions)  # probe 13: edited model config.json gave scores of 7.8e7 / was ignored
  tiny_category
  run_expect 0 '"stop_reason"' "$MIRAD" "${TRAIN[@]}" --set refine.max_rounds=1 --out model
  cp -r model model.orig
  edit_model_and_refuse() {  # PATTERN PYTHON-EDIT: predict refuses the edited model
    local pattern=$1 edit=$2
    rm -rf model && cp -r model.orig model
    edit_json model/config.json "$edit"
    run_expect 2 "$pattern" "$MIRAD" predict --model model carpet/test/good --json
  }
  edit_model_and_refuse "config.features.smooth is false but backbone.smooth is true" \
    'j["config"]["features"]["smooth"] = False'
  edit_model_and_refuse "taps\[0\].op is 99999 but the backbone's tap 'stride8' is op" \
    'j["taps"][0]["op"] = 99999'
  edit_model_and_refuse "taps\[1\] is named 'stride8' but config.features.taps\[1\] is 'stride16'" \
    'j["taps"][1]["name"] = "stride8"'
  edit_model_and_refuse "taps\[0\].flow is not the flow config.flow gives" \
    'j["taps"][0]["flow"]["seed"] += 1'
  edit_model_and_refuse "taps\[0\].flow is not the flow config.flow gives" \
    'j["config"]["flow"]["cond_dim"] = 32'
  rm -rf model && cp -r model.orig model
  run_expect 0 '"anomalous"' "$MIRAD" predict --model model carpet/test/good --json
  ;;
masks_and_taps)  # probe 17: odd masks accepted silently; duplicate taps accepted by train
  tiny_category
  run_expect 2 "config.features.taps lists 'stride8' twice" \
    "$MIRAD" train --data carpet --out m2 --set 'features.taps=["stride8","stride8"]'
  op=$("$MIRAD" embed carpet/train/good --taps stride8 --out f.safetensors | sed -n 's/.*stride8 (op \([0-9]*\)).*/\1/p')
  [ -n "$op" ] || fail "no op index for stride8"
  run_expect 2 "taps 'stride8' and '$op' are the same op" \
    "$MIRAD" train --data carpet --out m2 --set "features.taps=[\"stride8\",\"$op\"]"
  [ ! -e m2 ] || fail "a model was written"
  run_expect 0 '"stop_reason"' "$MIRAD" "${TRAIN[@]}" --set refine.max_rounds=1 --out model
  run_expect 0 '"pixel_auroc"' "$MIRAD" eval --model model --data carpet --json
  mask=$(ls carpet/ground_truth/*/*.png | head -1)
  read -r w h < <(png_size "$mask")
  cp "$mask" mask.orig
  mask_png "$mask" "$w" $((h / 2)) 255
  run_expect 2 "mask .* is ${w}x$((h / 2)), of another aspect ratio than its image" \
    "$MIRAD" eval --model model --data carpet --json
  mask_png "$mask" "$w" "$h" 128,200
  run_expect 2 "mask .* is not binary: it holds 3 gray levels \(0, 128, 200\)" \
    "$MIRAD" eval --model model --data carpet --json
  # A 0/1 mask (one foreground value, as some datasets write them) is binary.
  mask_png "$mask" "$w" "$h" 1
  run_expect 0 '"pixel_auroc"' "$MIRAD" eval --model model --data carpet --json
  cp mask.orig "$mask"
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "PASS [$CASE]"
