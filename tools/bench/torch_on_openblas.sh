# Sourced by the side-by-side scripts (perf_report.sh, compare_torch.sh): installs Debian's
# python3-torch and OpenBLAS (libopenblas0-pthread) when missing, and refuses to go on unless
# the libblas.so.3 that Debian's torch links resolves to OpenBLAS; the reference BLAS is about
# 15x slower and would make every ratio meaningless. Sets blas_target.
need=()
for p in python3-torch libopenblas0-pthread; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
blas_target=$(readlink -f /usr/lib/x86_64-linux-gnu/libblas.so.3 || true)
case "$blas_target" in
  *openblas*) ;;
  *) echo "torch would use the reference BLAS ($blas_target), not OpenBLAS: refusing" >&2; exit 2 ;;
esac
