"""Adapters from QGIS objects to the engine's plain inputs: a feature source becomes a ``BoxSource``,
Processing feedback becomes a ``Progress``, layers become the files they are read from, and the engine's
errors become ``QgsProcessingException``."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Tuple

from qgis.core import (QgsCoordinateReferenceSystem, QgsFeatureRequest, QgsProcessingFeedback, QgsWkbTypes,
                       NULL)
from qgis.PyQt.QtCore import QDate, QDateTime, QTime, QVariant

from ..samrs_qgis.boxes import BoxFeature, BoxSource, geometry_from_wkb
from ..samrs_qgis.environment.profiles import PROFILES
from ..samrs_qgis.errors import BackendUnavailableError, SamrsError
from ..samrs_qgis.progress import Progress

_FIELD_TYPES = {
    QVariant.Int: "int", QVariant.UInt: "int", QVariant.LongLong: "int", QVariant.ULongLong: "int",
    QVariant.Double: "float", QVariant.Bool: "bool", QVariant.String: "str",
}


def _plain_value(value: Any) -> Any:
    """A QVariant-ish attribute value as a plain Python value (NULL -> None, dates -> ISO text)."""
    if value is None or value == NULL:
        return None
    if isinstance(value, (QDate, QDateTime, QTime)):
        return value.toString("yyyy-MM-dd" if isinstance(value, QDate) else "yyyy-MM-ddTHH:mm:ss"
                              if isinstance(value, QDateTime) else "HH:mm:ss")
    return value


def box_source_from_qgis(source, name: str, path: Optional[str] = None) -> BoxSource:
    """A ``BoxSource`` reading features lazily from a ``QgsFeatureSource`` (file-based or in memory);
    ``path``: the file it is read from, if any (see :func:`layer_file`)."""
    fields = {f.name(): _FIELD_TYPES.get(f.type(), "str") for f in source.fields()}
    crs = source.sourceCrs()
    crs_wkt = crs.toWkt(QgsCoordinateReferenceSystem.WKT_PREFERRED) if crs.isValid() else ""
    geometry_type = {QgsWkbTypes.PolygonGeometry: "Polygon", QgsWkbTypes.PointGeometry: "Point",
                     QgsWkbTypes.LineGeometry: "LineString", QgsWkbTypes.NullGeometry: "None"}.get(
        QgsWkbTypes.geometryType(source.wkbType()), "Unknown")
    names = list(fields)

    def features() -> Iterator[BoxFeature]:
        for index, feature in enumerate(source.getFeatures(QgsFeatureRequest())):
            geometry = None
            if feature.hasGeometry():
                qgeom = feature.geometry()
                if QgsWkbTypes.isCurvedType(qgeom.wkbType()):
                    qgeom.convertToStraightSegment()
                geometry = geometry_from_wkb(bytes(qgeom.asWkb()))
            attributes: Dict[str, Any] = {n: _plain_value(v) for n, v in zip(names, feature.attributes())}
            yield BoxFeature(index=index, fid=feature.id(), attributes=attributes, geometry=geometry)

    return BoxSource(name=name, path=path, fields=fields, crs_wkt=crs_wkt, geometry_type=geometry_type,
                     features=features(), feature_count=source.featureCount())


class FeedbackProgress(Progress):
    """Engine progress onto ``QgsProcessingFeedback`` (progress bar, log, cancel button)."""

    def __init__(self, feedback: QgsProcessingFeedback):
        self.feedback = feedback or QgsProcessingFeedback()

    def set_fraction(self, fraction: float) -> None:
        self.feedback.setProgress(100.0 * fraction)

    def info(self, message: str) -> None:
        self.feedback.pushInfo(message)

    def warning(self, message: str) -> None:
        self.feedback.pushWarning(message)

    def is_cancelled(self) -> bool:
        return self.feedback.isCanceled()


# -- layer inputs as the files the engine reads ---------------------------------------------------

def raster_layer_path(layer, role: str) -> str:
    """The file of a raster layer GDAL reads directly; a clear error for other providers."""
    from qgis.core import QgsProcessingException

    if layer.providerType() != "gdal":
        raise QgsProcessingException(
            f"The {role} '{layer.name()}' is served by the '{layer.providerType()}' provider, which GDAL cannot "
            "read directly. Save it as a GeoTIFF first (Raster > Conversion > Translate).")
    return layer.source()


def layer_file(layer) -> Optional[str]:
    """The file a layer is read from (GDAL/OGR providers), or None (memory layers, databases, services)."""
    from qgis.core import QgsProviderRegistry

    if layer is None or layer.providerType() not in ("ogr", "gdal"):
        return None
    return QgsProviderRegistry.instance().decodeUri(layer.providerType(), layer.source()).get("path") or None


def vector_layer_location(layer, role: str) -> Tuple[str, Optional[str]]:
    """``(file, layer name or None)`` of a vector layer OGR reads directly; a clear error for other providers
    (memory layers, databases, services) and for layers with a filter (the engine would read every feature)."""
    from qgis.core import QgsProcessingException, QgsProviderRegistry

    if layer.providerType() != "ogr":
        raise QgsProcessingException(
            f"The {role} '{layer.name()}' is served by the '{layer.providerType()}' provider (not a file OGR reads). "
            "Save it as a GeoPackage first (right-click > Export > Save Features As…).")
    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    if parts.get("subset"):
        raise QgsProcessingException(
            f"The {role} '{layer.name()}' has a filter ({parts['subset']}); the whole file would be read. "
            "Save the filtered features as a GeoPackage first, or clear the filter.")
    return parts.get("path") or layer.source(), parts.get("layerName") or None


@contextmanager
def engine_errors():
    """The engine's deliberate errors (bad input, cancelled) as ``QgsProcessingException``: the message
    without a traceback."""
    from qgis.core import QgsProcessingException

    try:
        yield
    except BackendUnavailableError as exc:
        if not exc.profile:
            raise QgsProcessingException(str(exc)) from exc
        raise QgsProcessingException(f"{exc.reason} {qgis_install_hint(exc.profile)}") from exc
    except SamrsError as exc:
        raise QgsProcessingException(str(exc)) from exc


SETUP_MENU = "Plugins › SAMRS › Set up models and dependencies…"


def qgis_install_hint(profile: str) -> str:
    """How to install ``profile`` from where the user is: the set-up dialog in the QGIS desktop, the
    ``samrs:installdependencies`` algorithm under ``qgis_process``."""
    import qgis.utils

    if getattr(qgis.utils, "iface", None) is not None:
        return f"Open {SETUP_MENU} and install the {profile} profile."
    index = list(PROFILES).index(profile)
    return (f"Install the {profile} profile: `qgis_process run samrs:installdependencies -- PROFILE={index}` "
            f"(then run this again).")
