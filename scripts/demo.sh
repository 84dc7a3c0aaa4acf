#!/usr/bin/env bash
# The main job on the shipped sample (61 tree-crown boxes over a NEON aerial image), through the plugin
# under qgis_process: SAM when a checkpoint is given, else the weights-free GrabCut backend.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/demo-output}
checkpoint=${2:-}
if [ -n "$checkpoint" ]; then
  backend=0; extra=("CHECKPOINT=$(readlink -f "$checkpoint")")
  echo "demo: backend SAM, checkpoint $checkpoint"
else
  backend=1; extra=()
  echo "demo: backend GrabCut (no SAM checkpoint given; run 'make demo CHECKPOINT=path/to/sam_vit_b_01ec64.pth' for SAM)"
fi
mkdir -p "$out"
"$root/scripts/qgis-process" run samrs:segmentboxes -- \
  INPUT="$root/demo/OSBS_029.tif" BOXES="$root/demo/OSBS_029_boxes.gpkg" CLASS_FIELD=label \
  BACKEND=$backend "${extra[@]}" \
  OUTPUT_INSTANCES="$out/OSBS_029_instances.tif" OUTPUT_SEMANTIC="$out/OSBS_029_semantic.tif" \
  OUTPUT_POLYGONS="$out/OSBS_029_masks.gpkg" PREVIEW=true 2>&1 | grep -v -e DeprecationWarning -e '^$' \
  | sed -n '/^Results/,$p;/^Backend:/p;/^Boxes:/p'
test -s "$out/OSBS_029_masks.gpkg"
echo "demo: outputs in $out:"
ls -1 "$out"
echo "demo: look at $out/OSBS_029_masks_preview.png (every mask) and OSBS_029_masks_worst.png (the lowest"
echo "      scores), or open the outputs in QGIS over demo/OSBS_029.tif: they open styled"
