#!/usr/bin/env bash
# The fresh-machine check: clones this repository's committed HEAD into a temporary folder (with
# ../shared beside it, as CI has), then runs the README's two commands, `tools/demo.sh` and
# `tools/test.sh`, natively and under each forced CPU kernel path (tools/cpu_paths.sh), and
# prints what failed. Uncommitted changes are not checked: commit first.
#
#   tools/fresh_check.sh [PATH...]   default: every path this CPU supports (tools/cpu_paths.sh list)
#
# Keeps the clone (its logs are in fresh_check/) when anything fails; exits non-zero then.
# About 5 min to build, then about 5 min per path on 2 cores.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
shared="$(cd "$repo/.." && pwd)/shared"

paths=("$@")
[ ${#paths[@]} -gt 0 ] || mapfile -t paths < <("$repo/tools/cpu_paths.sh" list)

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mirad-fresh.XXXXXX")
git clone --quiet "$repo" "$tmp/mirad" || { echo "fresh_check: clone failed"; exit 1; }
[ -d "$shared" ] && ln -s "$shared" "$tmp/shared"
cd "$tmp/mirad" || exit 1
logs="$tmp/fresh_check"
mkdir -p "$logs"
echo "fresh_check: $(git log -1 --format='%h %s' | cut -c1-100)"
echo "fresh_check: clone in $tmp; paths: ${paths[*]}"

status=0
report=()
for p in "${paths[@]}"; do
  if ! env_line=$(tools/cpu_paths.sh env "$p"); then
    report+=("$p: not supported by this CPU (skipped)")
    continue
  fi
  for cmd in demo test; do
    start=$SECONDS
    # shellcheck disable=SC2086
    env $env_line "tools/$cmd.sh" >"$logs/$p.$cmd.log" 2>&1
    rc=$?
    line="$p: tools/$cmd.sh exit $rc, $((SECONDS - start)) s"
    if [ "$cmd" = test ]; then
      line+="; $(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$logs/$p.$cmd.log" | tail -1)"
    fi
    echo "$line"
    report+=("$line")
    if [ $rc -ne 0 ]; then
      status=1
      report+=("$(sed -n '/The following tests FAILED/,$p' "$logs/$p.$cmd.log" | grep -E '^\s+[0-9]+ - ' || tail -5 "$logs/$p.$cmd.log")")
    fi
  done
done

echo "== fresh_check verdict"
printf '%s\n' "${report[@]}"
if [ $status -eq 0 ]; then
  echo "fresh_check: everything passed"
  rm -rf "$tmp"
else
  echo "fresh_check: FAILED (logs in $logs)"
fi
exit $status
