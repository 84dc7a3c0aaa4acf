#!/usr/bin/env bash
# Installs everything the plugin, its tests and the demo need on Debian 12, idempotently.
#   apt: QGIS 3.22 with PyQGIS and the geospatial stack that links QGIS's own GDAL/PROJ;
#   venv: made from /usr/bin/python3 (the interpreter QGIS embeds) with --system-site-packages,
#         holding torch, the SAM families' packages (segment-anything, segment-anything-hq, sam2, sam3),
#         ONNX Runtime and onnx, OpenCV and the test tools, under a constraints file that keeps the
#         system numpy; sam2 (a source distribution) is built and sam3 installed in steps of their own.
# A second run only checks and returns.
#
# One line per step on the terminal; the full output of every step (apt, pip, the import check) goes to
# the log, build/setup.log (SETUP_LOG overrides), rewritten on each run. A failing step prints its name,
# the end of the log and the log's path, and the script exits with the step's status.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
log=${SETUP_LOG:-$root/build/setup.log}

APT_PACKAGES=(qgis python3-qgis qgis-providers python3-rasterio python3-geopandas python3-fiona python3-matplotlib python3-scipy proj-bin
  python3-shapely python3-pyproj gdal-bin python3-gdal python3-venv xvfb xauth zip)

mkdir -p "$(dirname "$log")"
log=$(cd "$(dirname "$log")" && pwd)/$(basename "$log")
echo "# scripts/setup.sh, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), user $(id -un), venv $venv" > "$log"

failed() {  # failed STEP STATUS
  echo "FAILED"
  {
    echo "setup: step '$1' failed (exit status $2). Last lines of the log:"
    tail -n 20 "$log" | sed 's/^/  | /'
    echo "setup: full log: $log"
  } >&2
  exit "$2"
}

step() {  # step NAME COMMAND...: prints "setup: NAME ... ok", the command's output goes to the log
  local name=$1 status=0
  shift
  printf 'setup: %s ... ' "$name"
  printf '\n## %s\n+ %s\n' "$name" "$*" >> "$log"
  "$@" >> "$log" 2>&1 || status=$?
  [ "$status" -eq 0 ] || failed "$name" "$status"
  echo "ok"
}

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  sudo_if_needed apt-get update &&
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# -- apt packages ----------------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt packages: installing ${missing[*]}" apt_install "${missing[@]}"
else
  echo "setup: apt packages ... ok (all ${#APT_PACKAGES[@]} installed)"
fi

# -- venv ------------------------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  step "venv: creating $venv" /usr/bin/python3 -m venv --system-site-packages "$venv"
else
  echo "setup: venv $venv ... ok (exists)"
fi

# -- Python packages: reinstalled only when the requirement files change ----------------------------
stamp="$venv/.samrs-requirements.sha256"
want=$(cat "$root/requirements/venv.txt" "$root/requirements/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "Python packages: installing requirements/venv.txt (torch is several GB: minutes)" \
    "$venv/bin/pip" install --disable-pip-version-check --progress-bar off \
    -c "$root/requirements/constraints.txt" -r "$root/requirements/venv.txt"
  # sam2 is a source distribution whose build imports torch: built against the venv's torch (no build
  # isolation), without its optional CUDA extension (only a GPU post-processing helper), and without
  # its declared dependencies (numpy>=1.24.4 would replace QGIS's numpy; the others are in venv.txt).
  step "sam2: building from source against the venv's torch, CUDA extension off" \
    env SAM2_BUILD_CUDA=0 SAM2_BUILD_ALLOW_ERRORS=0 "$venv/bin/pip" install --disable-pip-version-check \
    --progress-bar off --no-build-isolation --no-deps -c "$root/requirements/constraints.txt" sam2
  # sam3 without its declared dependencies: numpy>=1.26 would replace QGIS's numpy (its imports are in venv.txt;
  # the version is pinned in constraints.txt)
  step "sam3: installing without its declared dependencies" \
    "$venv/bin/pip" install --disable-pip-version-check --progress-bar off --no-deps \
    -c "$root/requirements/constraints.txt" sam3
  echo "$want" > "$stamp"
else
  echo "setup: Python packages ... ok (requirements unchanged)"
fi

# -- check: everything imports from the venv -------------------------------------------------------
name="import check (QGIS, GDAL, rasterio, torch, segment-anything, OpenCV, SAM-HQ, SAM 2, SAM 3, ONNX Runtime, Dask)"
printf 'setup: %s ... ' "$name"
printf '\n## %s\n' "$name" >> "$log"
status=0
versions=$("$venv/bin/python" - 2>> "$log" <<'PY'
import numpy, osgeo, qgis.core, rasterio, segment_anything, torch, cv2, pycocotools.mask, matplotlib
import segment_anything_hq, sam2.build_sam, sam3.model_builder, onnxruntime, onnx, distributed
from importlib.metadata import version
print(f"QGIS {qgis.core.Qgis.QGIS_VERSION}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"rasterio {rasterio.__version__}, OpenCV {cv2.__version__}, segment-anything-hq "
      f"{version('segment-anything-hq')}, sam2 {version('sam2')}, sam3 {version('sam3')}, "
      f"onnxruntime {onnxruntime.__version__}, "
      f"onnx {onnx.__version__}, distributed {distributed.__version__}")
PY
) || status=$?
[ -z "$versions" ] || echo "$versions" >> "$log"
[ "$status" -eq 0 ] || failed "$name" "$status"
echo "ok ($versions)"
