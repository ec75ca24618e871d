#!/usr/bin/env bash
# The README's demo command: installs what is missing, builds, and runs `mirad demo` (on the
# GPU when one is present). Extra arguments go to `mirad demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
device=cpu
"${MIRAD_BUILD_DIR:-build}/tools/mirad" info | grep -q "cuda device: yes" && device=cuda
exec "${MIRAD_BUILD_DIR:-build}/tools/mirad" demo --device "$device" "$@"
