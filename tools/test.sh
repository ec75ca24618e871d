#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs the whole suite.
# Tests labelled "cuda" skip (GTEST_SKIP) when no device exists; everything else must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
ctest --test-dir "${MIRAD_BUILD_DIR:-build}" --output-on-failure -j "$(nproc)" "$@"
