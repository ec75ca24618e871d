#!/usr/bin/env bash
# Fetches the Debian texture packages `mirad synth` builds its categories from, and unpacks them
# into a cache folder (never into the repository). Idempotent: a package already unpacked is
# skipped. Needs apt-get and dpkg-deb (Debian/Ubuntu); root only if the package lists are stale.
#
#   tools/textures/fetch_textures.sh [DEST]
#
# DEST defaults to $MIRAD_TEXTURES, else ${XDG_CACHE_HOME:-$HOME/.cache}/mirad/textures, which is
# also where `mirad synth` looks when --textures is not given. Result:
#   DEST/ufoai-textures/pk3/textures/...           (the game's 0textures.pk3, unzipped)
#   DEST/mypaint-data-extras/usr/share/mypaint/...  (the paper and canvas backgrounds)
#   DEST/<package>/VERSION, DEST/<package>/copyright
set -euo pipefail

DEST="${1:-${MIRAD_TEXTURES:-${XDG_CACHE_HOME:-$HOME/.cache}/mirad/textures}}"
PACKAGES=(ufoai-textures mypaint-data-extras)

die() { echo "fetch_textures: $*" >&2; exit 1; }
command -v apt-get >/dev/null || die "apt-get not found (this script needs a Debian-based system)"
command -v dpkg-deb >/dev/null || die "dpkg-deb not found"

# The pk3 is a zip archive; unzip is not always installed, python3's zipfile does the same job.
unzip_to() {
  if command -v unzip >/dev/null; then
    unzip -q -o "$1" -d "$2"
  elif command -v python3 >/dev/null; then
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
  else
    die "need unzip or python3 to unpack $1 (apt-get install unzip)"
  fi
}

mkdir -p "$DEST"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# apt-get download drops privileges to _apt where it can; a world-writable folder avoids its
# "download is performed unsandboxed" warning.
chmod 777 "$WORK"

updated=0
for pkg in "${PACKAGES[@]}"; do
  if [[ -f "$DEST/$pkg/.complete" ]]; then
    echo "fetch_textures: $pkg already in $DEST/$pkg ($(cat "$DEST/$pkg/VERSION"))"
    continue
  fi
  echo "fetch_textures: downloading $pkg"
  if ! (cd "$WORK" && apt-get download "$pkg"); then
    # Stale or missing package lists are the usual cause; refreshing them needs root.
    if [[ $updated -eq 0 ]]; then
      echo "fetch_textures: download failed; running apt-get update" >&2
      apt-get update || die "apt-get update failed (are you root?)"
      updated=1
    fi
    (cd "$WORK" && apt-get download "$pkg") || die "cannot download $pkg"
  fi
  deb="$(ls "$WORK"/"${pkg}"_*.deb | head -n 1)"
  version="$(dpkg-deb -f "$deb" Version)"
  # Unpack beside the final folder, then rename: an interrupted run never leaves a folder
  # that looks complete.
  part="$DEST/$pkg.partial"
  rm -rf "$part"
  mkdir -p "$part"
  dpkg-deb -x "$deb" "$part"
  if [[ "$pkg" == ufoai-textures ]]; then
    pk3="$part/usr/share/games/ufoai/base/0textures.pk3"
    [[ -f "$pk3" ]] || die "$pkg $version has no 0textures.pk3"
    unzip_to "$pk3" "$part/pk3"
    rm -f "$pk3"  # 330 MB that the unzipped copy duplicates
  fi
  cp "$part/usr/share/doc/$pkg/copyright" "$part/copyright" 2>/dev/null || true
  echo "$version" >"$part/VERSION"
  touch "$part/.complete"
  rm -rf "$DEST/$pkg"
  mv "$part" "$DEST/$pkg"
  rm -f "$deb"
  echo "fetch_textures: $pkg $version -> $DEST/$pkg"
done
echo "fetch_textures: done ($DEST)"
