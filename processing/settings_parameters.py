"""The settings tables (:mod:`samrs_qgis.settings`) as Processing parameters.

:func:`setting_parameters` makes one parameter per row (name, label, tooltip, default, choices, bounds and the
advanced flag all from the row); :func:`setting_values` reads them back as the engine's values. Nothing about
a setting is spelled here.

Processing enums are numbered: a choice's number is its position in the row's ``choices`` (after the row's
``none_label``, number 0, when it has one). Processing numbers
have no "unset", so a row with ``zero_means_unset`` shows 0 for the engine's None.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from qgis.core import (QgsProcessingParameterBand, QgsProcessingParameterBoolean, QgsProcessingParameterDefinition,
                       QgsProcessingParameterEnum, QgsProcessingParameterField, QgsProcessingParameterFile,
                       QgsProcessingParameterNumber, QgsProcessingParameterString)

from ..samrs_qgis.classes import parse_class_list
from ..samrs_qgis.settings import (BANDS, BOOL, CHOICE, FIELD, FILE, FLOAT, FOLDER, INT, NAMES, Setting,
                                   parse_bands)


def processing_default(setting: Setting) -> Any:
    """The row's default as the Processing parameter shows it (an enum's number; 0 for an unset number)."""
    if setting.kind == CHOICE and setting.none_label:
        return 0 if setting.default is None else 1 + setting.values.index(setting.default)
    if setting.kind == CHOICE:
        return setting.values.index(setting.default)
    if setting.kind in (INT, FLOAT) and setting.default is None and setting.zero_means_unset:
        return 0
    return setting.default


def _parameter(s: Setting, raster_parameter: Optional[str], layers: Dict[str, str]):
    optional = s.default is None or s.kind in (FIELD, FILE, FOLDER, BANDS, NAMES)
    default = processing_default(s)
    if s.kind == CHOICE:
        labels = ([s.none_label] if s.none_label else []) + [label for _, label in s.choices]
        return QgsProcessingParameterEnum(s.parameter, s.label, labels, defaultValue=default)
    if s.kind == BOOL:
        return QgsProcessingParameterBoolean(s.parameter, s.label, defaultValue=default)
    if s.kind in (INT, FLOAT):
        kind = QgsProcessingParameterNumber.Integer if s.kind == INT else QgsProcessingParameterNumber.Double
        minimum = 0 if s.zero_means_unset else s.minimum
        return QgsProcessingParameterNumber(
            s.parameter, s.label, kind, defaultValue=default,
            minValue=-1e308 if minimum is None else minimum, maxValue=1e308 if s.maximum is None else s.maximum)
    if s.kind == FILE:
        return QgsProcessingParameterFile(s.parameter, s.label, fileFilter=s.file_filter, optional=True)
    if s.kind == FOLDER:
        return QgsProcessingParameterFile(s.parameter, s.label, behavior=QgsProcessingParameterFile.Folder,
                                          optional=True)
    if s.kind == FIELD:
        kind = QgsProcessingParameterField.Numeric if s.numeric_field else QgsProcessingParameterField.Any
        return QgsProcessingParameterField(s.parameter, s.label, defaultValue=default,
                                           parentLayerParameterName=layers.get(s.parent, ""), type=kind,
                                           optional=optional)
    if s.kind == BANDS and raster_parameter:
        return QgsProcessingParameterBand(s.parameter, s.label, None, raster_parameter, optional=True,
                                          allowMultiple=True)
    return QgsProcessingParameterString(s.parameter, s.label, optional=True)  # BANDS as text, NAMES


def setting_parameters(rows: Sequence[Setting], raster_parameter: Optional[str] = None,
                       layers: Optional[Dict[str, str]] = None) -> List[QgsProcessingParameterDefinition]:
    """One parameter per row. ``raster_parameter``: the algorithm's raster parameter, offered as bands to choose
    from (without one, bands are typed as "4,3,2"); ``layers``: the parameter of each layer role a field
    belongs to (e.g. ``{"boxes": "BOXES"}``)."""
    parameters = []
    for s in rows:
        parameter = _parameter(s, raster_parameter, layers or {})
        parameter.setHelp(s.help)
        if s.advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        parameters.append(parameter)
    return parameters


def setting_values(algorithm, parameters, context, rows: Sequence[Setting]) -> Dict[str, Any]:
    """The engine's values (setting name -> value) of the rows' parameters."""
    values: Dict[str, Any] = {}
    for s in rows:
        name = s.parameter
        if s.kind == CHOICE:
            choices = ((None,) if s.none_label else ()) + s.values
            value = choices[algorithm.parameterAsEnum(parameters, name, context)]
        elif s.kind == BOOL:
            value = algorithm.parameterAsBoolean(parameters, name, context)
        elif s.kind == INT:
            value = algorithm.parameterAsInt(parameters, name, context)
            value = None if s.zero_means_unset and value == 0 else value
        elif s.kind == FLOAT:
            value = algorithm.parameterAsDouble(parameters, name, context)
        elif s.kind in (FILE, FOLDER):
            value = algorithm.parameterAsFile(parameters, name, context) or None
        elif s.kind == FIELD:
            value = algorithm.parameterAsString(parameters, name, context) or None
        elif s.kind == BANDS and isinstance(algorithm.parameterDefinition(name), QgsProcessingParameterBand):
            value = algorithm.parameterAsInts(parameters, name, context) or None
        elif s.kind == BANDS:
            value = parse_bands(algorithm.parameterAsString(parameters, name, context))
        else:  # NAMES
            value = parse_class_list(algorithm.parameterAsString(parameters, name, context))
        values[s.name] = value
    return values
