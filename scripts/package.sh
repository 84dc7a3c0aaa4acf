#!/usr/bin/env bash
# A zip that QGIS's "Install from ZIP" accepts: one top folder `samrs/` with the plugin's files only.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=$(readlink -f "${1:-$root/dist/samrs.zip}")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/samrs" "$(dirname "$target")"
cd "$root"
git ls-files -- __init__.py metadata.txt README.md LICENSE icons processing samrs_qgis \
  | tar -cf - -T - | tar -xf - -C "$stage/samrs"
rm -f "$target"
(cd "$stage" && zip -qr "$target" samrs -x '*__pycache__*')
echo "package: $target"
