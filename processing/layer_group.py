"""Loading ``samrs:segmentboxes``' outputs as one layer-tree group.

When the outputs are loaded into a project on completion (the toolbox dialog, ``processing.runAndLoadResults``),
each loaded layer gets a :class:`QgsProcessingLayerPostProcessorInterface` that names it ("masks", "classes",
"instances"), makes sure it carries the style written beside it, and moves it into the run's group
"SAMRS <raster name>": polygons above the semantic raster above the instance raster. The group is placed
directly above the source raster's node in the layer tree, or at the top when the raster is not in the project.

PyQGIS keeps no reference to a Python post-processor: the objects are held in ``_ALIVE`` until they have run.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

from qgis.core import QgsLayerTreeGroup, QgsLayerTreeLayer, QgsProcessingLayerPostProcessorInterface, QgsProject

RANK_PROPERTY = "samrs/rank"
MAX_ALIVE = 200  # post-processors whose layer never loaded are dropped after this many newer ones

_ALIVE: List["GroupedLayer"] = []


def _same_file(a: str, b: str) -> bool:
    a, b = a.split("|")[0], b.split("|")[0]
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


class OutputGroup:
    """One run's group: created by the first of its layers to load, shared by the others."""

    def __init__(self, name: str, raster_id: str, raster_source: str):
        self.name, self.raster_id, self.raster_source = name, raster_id, raster_source
        self.group: Optional[QgsLayerTreeGroup] = None
        self.pending: List["GroupedLayer"] = []

    def _raster_node(self, root) -> Optional[QgsLayerTreeLayer]:
        node = root.findLayer(self.raster_id) if self.raster_id else None
        if node is not None:
            return node
        for candidate in root.findLayers():
            layer = candidate.layer()
            if layer is not None and layer.source() and _same_file(layer.source(), self.raster_source):
                return candidate
        return None

    def ensure_group(self, project: QgsProject) -> QgsLayerTreeGroup:
        from qgis.PyQt import sip

        root = project.layerTreeRoot()
        if self.group is not None and not sip.isdeleted(self.group) and self.group.parent() is not None:
            return self.group
        raster = self._raster_node(root)
        parent = raster.parent() if raster is not None else root
        index = 0
        if raster is not None:
            index = next(i for i, child in enumerate(parent.children())
                         if isinstance(child, QgsLayerTreeLayer) and child.layerId() == raster.layerId())
        self.group = parent.insertGroup(index, self.name)
        return self.group


class GroupedLayer(QgsProcessingLayerPostProcessorInterface):
    """Post-processor of one loaded output: its name, its style (the default style SAMRS wrote, which Processing
    does not load for rasters) and its place in the run's group."""

    def __init__(self, group: OutputGroup, name: str, rank: int):
        super().__init__()
        self.output_group, self.name, self.rank = group, name, rank
        group.pending.append(self)
        _ALIVE.append(self)
        del _ALIVE[:-MAX_ALIVE]

    def postProcessLayer(self, layer, context, feedback):  # noqa: N802 (QGIS's name)
        try:
            self._place(layer, context)
        finally:
            if self in self.output_group.pending:
                self.output_group.pending.remove(self)
            if self in _ALIVE:
                _ALIVE.remove(self)

    def _place(self, layer, context) -> None:
        layer.setName(self.name)
        if not _is_styled(layer):
            layer.loadDefaultStyle()
            layer.triggerRepaint()
        project = context.project() or QgsProject.instance()
        if project.mapLayer(layer.id()) is None:
            project = QgsProject.instance()
        root = project.layerTreeRoot()
        node = root.findLayer(layer.id())
        if node is None:
            return
        group = self.output_group.ensure_group(project)
        index = sum(1 for child in group.children()
                    if (child.customProperty(RANK_PROPERTY) if child.customProperty(RANK_PROPERTY) is not None
                        else 99) < self.rank)
        moved = node.clone()
        moved.setCustomProperty(RANK_PROPERTY, self.rank)
        group.insertChildNode(index, moved)  # first the new node, so the layer never leaves the tree
        node.parent().removeChildNode(node)


def _is_styled(layer) -> bool:
    """The style SAMRS writes is on: categorized polygons; for a raster, the style written beside it (QGIS
    makes a raster with a colour table paletted by itself, but without the class names)."""
    from qgis.core import QgsMapLayerType

    if layer.type() == QgsMapLayerType.VectorLayer:
        return layer.renderer() is not None and layer.renderer().type() == "categorizedSymbol"
    if layer.type() == QgsMapLayerType.RasterLayer:
        return not os.path.isfile(os.path.splitext(layer.source())[0] + ".qml")
    return True


def group_outputs_on_load(context, raster_layer, outputs: Dict[str, tuple]) -> int:
    """Give each output in ``outputs`` (path -> (layer name, rank)) that will be loaded on completion a
    post-processor placing it in one group for the run. Returns how many will be loaded."""
    loaded = {path: spec for path, spec in outputs.items() if path and context.willLoadLayerOnCompletion(path)}
    if not loaded:
        return 0
    group = OutputGroup(f"SAMRS {raster_layer.name()}", raster_layer.id(), raster_layer.source())
    for path, (name, rank) in loaded.items():
        details = context.layerToLoadOnCompletionDetails(path)
        details.name = name
        details.setPostProcessor(GroupedLayer(group, name, rank))
    return len(loaded)
