"""The settings tables reach both front ends whole: every row is a CLI option and a Processing parameter of
every command and algorithm that offers it, with the same default and choices, and a set of non-default
values given to either front end becomes the same ``SegmentOptions``."""
import dataclasses

import pytest

from samrs.samrs_qgis.cli import build_parser
from samrs.samrs_qgis.errors import InputError
from samrs.samrs_qgis.settings import (ANNOTATION_SETTINGS, BANDS, BOOL, BOX_LAYER, CHOICE, FIELD, FILE, FLOAT, FOLDER, INT,
                                       MATCHING_SETTINGS, NAMES, SEGMENT_SETTINGS, MatchingOptions,
                                       SegmentOptions, check_options, make_options, settings_for)

# command -> (its positional arguments, the rows it leaves out); algorithm -> the rows it leaves out
CLI_COMMANDS = {
    "segment": (["r.tif", "b.gpkg"], ()),
    "segment-dataset": (["imgs", "anns", "--out-dir", "o"], (BOX_LAYER,)),
    "ablation": (["r.tif", "b.gpkg", "--reference", "ref.gpkg", "--out-dir", "o"], ("prompt", "embedding_cache")),
    "ablation-dataset": (["imgs", "anns", "--reference", "ref", "--out-dir", "o"],
                         ("prompt", "embedding_cache", BOX_LAYER)),
}
ALGORITHMS = {"samrs:segmentboxes": (), "samrs:segmentdataset": (BOX_LAYER,)}
MATCHING_COMMANDS = {"evaluate": ["p.gpkg", "r.gpkg"], "compare": ["a=p.gpkg", "--reference", "r", "--out", "c.csv"],
                     "ablation": CLI_COMMANDS["ablation"][0], "ablation-dataset": CLI_COMMANDS["ablation-dataset"][0]}


def _actions(parser, command):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: a for a in sub._actions}


def test_options_are_one_field_per_row_with_the_rows_defaults():
    assert [f.name for f in dataclasses.fields(SegmentOptions)] == [s.name for s in SEGMENT_SETTINGS]
    assert {f.name: f.default for f in dataclasses.fields(SegmentOptions)} == \
        {s.name: s.default for s in SEGMENT_SETTINGS}
    assert [f.name for f in dataclasses.fields(MatchingOptions)] == [s.name for s in MATCHING_SETTINGS]
    for s in SEGMENT_SETTINGS + MATCHING_SETTINGS:
        assert s.kind != CHOICE or s.default in s.values or (s.default is None and s.none_label), s.name
        assert len({label for _, label in s.choices}) == len(s.choices), s.name


@pytest.mark.parametrize("command", CLI_COMMANDS)
def test_every_row_is_a_cli_option_with_its_default_and_choices(command):
    positional, exclude = CLI_COMMANDS[command]
    parser = build_parser()
    actions = _actions(parser, command)
    args = parser.parse_args([command, *positional])
    rows = settings_for(exclude)
    for s in rows:
        assert s.flag in actions[s.name].option_strings, s.name
        assert getattr(args, s.name) == s.default, s.name
        if s.kind == CHOICE:
            assert tuple(actions[s.name].choices) == s.values, s.name
    offered = {s.name for s in SEGMENT_SETTINGS} & set(actions)
    assert offered == {s.name for s in rows}  # and nothing of what the command sets itself


@pytest.mark.parametrize("command", MATCHING_COMMANDS)
def test_every_matching_row_is_a_cli_option(command):
    parser = build_parser()
    actions = _actions(parser, command)
    args = parser.parse_args([command, *MATCHING_COMMANDS[command]])
    for s in MATCHING_SETTINGS:
        assert s.flag in actions[s.name].option_strings and getattr(args, s.name) == s.default, (command, s.name)


def _algorithm(algorithm_id):
    from qgis.core import QgsApplication

    return QgsApplication.processingRegistry().algorithmById(algorithm_id)


@pytest.mark.parametrize("algorithm_id", ALGORITHMS)
def test_every_row_is_a_processing_parameter_with_its_default_and_choices(qgis_app, algorithm_id):
    from qgis.core import QgsProcessingParameterDefinition

    from samrs.processing.settings_parameters import processing_default

    alg = _algorithm(algorithm_id)
    rows = settings_for(ALGORITHMS[algorithm_id])
    for s in rows:
        parameter = alg.parameterDefinition(s.parameter)
        assert parameter is not None, s.parameter
        assert parameter.defaultValue() == processing_default(s), s.name
        assert bool(parameter.flags() & QgsProcessingParameterDefinition.FlagAdvanced) == s.advanced, s.name
        assert parameter.help() == s.help
        if s.kind == CHOICE:
            assert parameter.options() == ([s.none_label] if s.none_label else []) + [l for _, l in s.choices], s.name
    offered = {s.parameter for s in SEGMENT_SETTINGS} & {p.name() for p in alg.parameterDefinitions()}
    assert offered == {s.parameter for s in rows}


def test_every_matching_row_is_a_parameter_of_evaluate(qgis_app):
    from samrs.processing.settings_parameters import processing_default

    alg = _algorithm("samrs:evaluate")
    for s in MATCHING_SETTINGS:
        assert alg.parameterDefinition(s.parameter).defaultValue() == processing_default(s), s.name


def _non_default_values(rows, tmp_path):
    """One value per row that is not its default, as the engine holds it. The model file is the official model's,
    in the models folder (the two settings name the same file)."""
    from samrs.samrs_qgis.checkpoints import OFFICIAL_CHECKPOINTS
    from samrs.samrs_qgis.environment.locations import models_folder

    checkpoint = models_folder() / OFFICIAL_CHECKPOINTS[list(OFFICIAL_CHECKPOINTS)[-1]].file_name
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"not read here")
    values = {}
    for s in rows:
        if s.kind == CHOICE:
            values[s.name] = next(v for v in reversed(s.values) if v != s.default)
        elif s.kind == BOOL:
            values[s.name] = not s.default
        elif s.kind in (INT, FLOAT):
            values[s.name] = (s.minimum or 0) + 7 if s.default is None else s.default + 3
        elif s.kind == FILE:
            values[s.name] = str(checkpoint)
        elif s.kind == FOLDER:
            values[s.name] = str(tmp_path)
        elif s.kind == FIELD:
            values[s.name] = "kind"
        elif s.kind == BANDS:
            values[s.name] = [3, 2, 1]
        elif s.kind == NAMES:
            values[s.name] = ["ship", "plane"]
    values.update(backend="sam", prompt="point")  # a combination that can run
    return values


def _cli_words(s, value):
    if s.kind == BOOL:
        return [s.flag if value else "--no-" + s.flag[2:]]
    if isinstance(value, list):
        return [s.flag, ",".join(map(str, value))]
    return [s.flag, str(value)]


def _processing_value(alg, s, value):
    from qgis.core import QgsProcessingParameterBand

    if s.kind == CHOICE:
        return s.values.index(value) + (1 if s.none_label else 0)  # the none choice is number 0
    if s.kind == NAMES or s.kind == BANDS and not isinstance(alg.parameterDefinition(s.parameter),
                                                               QgsProcessingParameterBand):
        return ",".join(map(str, value))  # typed as text
    return value


@pytest.mark.parametrize("command,algorithm_id", [("segment", "samrs:segmentboxes"),
                                                  ("segment-dataset", "samrs:segmentdataset")])
def test_both_front_ends_map_the_same_values_onto_the_same_options(qgis_app, tmp_path, command, algorithm_id):
    from qgis.core import QgsProcessingContext

    from samrs.processing.settings_parameters import setting_values
    from samrs.samrs_qgis.cli_options import options_from_args

    positional, exclude = CLI_COMMANDS[command]
    rows = settings_for(exclude)
    values = _non_default_values(rows, tmp_path)
    words = [w for s in rows for w in _cli_words(s, values[s.name])]
    from_cli = options_from_args(build_parser().parse_args([command, *positional, *words]))

    alg = _algorithm(algorithm_id)
    parameters = {s.parameter: _processing_value(alg, s, values[s.name]) for s in rows}
    from_processing = make_options(setting_values(alg, parameters, QgsProcessingContext(), rows))
    assert from_cli == from_processing == make_options(values)
    assert all(getattr(from_cli, s.name) != s.default for s in rows if s.name not in ("backend",))


def test_checks_name_the_setting_and_both_spellings(tmp_path):
    with pytest.raises(InputError, match=r"window size 32 must be 64 or more \(--window-size, WINDOW_SIZE\)"):
        check_options(SegmentOptions(backend="grabcut", window_size=32))
    with pytest.raises(InputError, match=r"Unknown prompt mode 'mask'.*\(--prompt, PROMPT\)"):
        check_options(SegmentOptions(backend="grabcut", prompt="mask"))
    with pytest.raises(InputError, match="needs a model file"):
        check_options(SegmentOptions(backend="sam"))
    with pytest.raises(InputError, match="grabcut backend takes the prompt modes box, not 'point'"):
        check_options(SegmentOptions(prompt="point"))  # auto without a checkpoint is GrabCut
    assert make_options({}).backend == "grabcut"
    checkpoint = tmp_path / "sam.pth"
    checkpoint.write_bytes(b"x")
    assert make_options({"checkpoint": str(checkpoint)}).backend == "sam"


def test_cli_refuses_a_value_out_of_bounds_before_running(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["segment", "r.tif", "b.gpkg", "--window-size", "10"])
    assert "must be 64 or more, not 10" in capsys.readouterr().err


ANNOTATION_COMMANDS = {"segment-dataset": (CLI_COMMANDS["segment-dataset"][0], ()),
                       "import-annotations": (["a.txt", "--out", "b.gpkg"], ()),
                       "ablation-dataset": (CLI_COMMANDS["ablation-dataset"][0], ()),
                       "report": (["d", "--html", "r.html"], ("annotation_format",))}
ANNOTATION_ALGORITHMS = {"samrs:segmentdataset": (), "samrs:importannotations": (),
                         "samrs:datasetreport": ("annotation_format",)}


@pytest.mark.parametrize("command", ANNOTATION_COMMANDS)
def test_every_annotation_row_is_a_cli_option(command):
    positional, exclude = ANNOTATION_COMMANDS[command]
    parser = build_parser()
    actions = _actions(parser, command)
    args = parser.parse_args([command, *positional])
    for s in settings_for(exclude, ANNOTATION_SETTINGS):
        assert s.flag in actions[s.name].option_strings and getattr(args, s.name) == s.default, (command, s.name)
        assert tuple(actions[s.name].choices) == s.values


@pytest.mark.parametrize("algorithm_id", ANNOTATION_ALGORITHMS)
def test_every_annotation_row_is_a_parameter(qgis_app, algorithm_id):
    from qgis.core import QgsProcessingContext

    from samrs.processing.settings_parameters import processing_default, setting_values

    alg = _algorithm(algorithm_id)
    rows = settings_for(ANNOTATION_ALGORITHMS[algorithm_id], ANNOTATION_SETTINGS)
    for s in rows:
        parameter = alg.parameterDefinition(s.parameter)
        assert parameter.defaultValue() == processing_default(s), (algorithm_id, s.name)
        assert parameter.options() == ([s.none_label] if s.none_label else []) + [label for _, label in s.choices]
    chosen = {s.parameter: len(s.choices) - (0 if s.none_label else 1) for s in rows}  # the last choice each
    values = setting_values(alg, chosen, QgsProcessingContext(), rows)
    assert values == {s.name: s.values[-1] for s in rows}
    assert setting_values(alg, {}, QgsProcessingContext(), rows) == {s.name: s.default for s in rows}
