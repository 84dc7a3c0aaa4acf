#!/usr/bin/env bash
# Installs everything the plugin, its tests and the demo need on Debian 12, idempotently.
#   apt: QGIS 3.22 with PyQGIS and the geospatial stack that links QGIS's own GDAL/PROJ;
#   venv: made from /usr/bin/python3 (the interpreter QGIS embeds) with --system-site-packages,
#         holding torch, segment-anything, OpenCV and the test tools, under a constraints file
#         that keeps the system numpy.
# A second run only checks and returns.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}

APT_PACKAGES=(qgis python3-qgis qgis-providers python3-rasterio python3-geopandas python3-fiona python3-matplotlib python3-scipy proj-bin
  python3-shapely python3-pyproj gdal-bin python3-gdal python3-venv xvfb xauth zip)

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi

# Reinstall only when the requirement files change.
stamp="$venv/.samrs-requirements.sha256"
want=$(cat "$root/requirements/venv.txt" "$root/requirements/constraints.txt" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into $venv"
  "$venv/bin/pip" install --disable-pip-version-check -q \
    -c "$root/requirements/constraints.txt" -r "$root/requirements/venv.txt"
  echo "$want" > "$stamp"
fi

"$venv/bin/python" - <<'PY'
import numpy, osgeo, qgis.core, rasterio, segment_anything, torch, cv2, pycocotools.mask, matplotlib
print(f"setup: ok (QGIS {qgis.core.Qgis.QGIS_VERSION}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"rasterio {rasterio.__version__}, OpenCV {cv2.__version__})")
PY
