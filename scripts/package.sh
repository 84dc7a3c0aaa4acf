#!/usr/bin/env bash
# A zip that QGIS's "Install from ZIP" accepts: one top folder `samrs/` with the plugin's files only,
# the git-tracked files under the entries of scripts/package-contents.txt.
#   scripts/package.sh [target.zip]     (default dist/samrs.zip; `make package` names it by version)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-$root/dist/samrs.zip}
mkdir -p "$(dirname "$target")"  # the folder first: it must exist before the path can be made absolute
target="$(cd "$(dirname "$target")" && pwd)/$(basename "$target")"
cd "$root"
mapfile -t entries < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' scripts/package-contents.txt)
for entry in "${entries[@]}"; do
  if [ -z "$(git ls-files -- "$entry")" ]; then
    echo "package: '$entry' (scripts/package-contents.txt) has no file tracked by git" >&2
    exit 1
  fi
done
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/samrs"
git ls-files -z -- "${entries[@]}" | tar --null -cf - -T - | tar -xf - -C "$stage/samrs"
rm -f "$target"
(cd "$stage" && zip -qrX "$target" samrs -x '*__pycache__*' '*.pyc')
echo "package: $target"
