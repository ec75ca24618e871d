#!/usr/bin/env bash
# Installs the Debian packages mirad builds against, only those missing, then configures and
# builds into ./build (or $MIRAD_BUILD_DIR). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(cmake ninja-build g++ pkg-config libopenblas-dev libopenblas0-pthread nlohmann-json3-dev
      libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libbenchmark-dev libdnnl-dev
      libspng-dev libturbojpeg0-dev libjpeg62-turbo-dev python3 python3-numpy python3-pil)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "mirad setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build="${MIRAD_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MIRAD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
