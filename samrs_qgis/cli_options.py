"""The settings table (:mod:`samrs_qgis.settings`) as command-line options.

:func:`add_setting_options` adds one argparse option per row, grouped by the row's group;
:func:`options_from_args` maps the parsed arguments back onto ``SegmentOptions``. Nothing about a setting
is spelled here: flags, choices, defaults, bounds and help all come from the table.
"""
from __future__ import annotations

import argparse
from typing import Dict, Iterable, List, Sequence

from .classes import parse_class_list
from .errors import InputError
from .settings import (BANDS, BOOL, CHOICE, FLOAT, INT, NAMES, SEGMENT_SETTINGS, Setting, make_options,
                       parse_bands, settings_for)


def _number_type(setting: Setting):
    convert = int if setting.kind == INT else float

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a {'whole ' if setting.kind == INT else ''}number, "
                                             f"not '{text}'") from None
        if setting.minimum is not None and value < setting.minimum or \
                setting.maximum is not None and value > setting.maximum:
            bounds = (f"between {setting.minimum:g} and {setting.maximum:g}" if setting.maximum is not None
                      else f"{setting.minimum:g} or more")
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value

    return parse


def _bands_type(text: str) -> List[int]:
    try:
        return parse_bands(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Choices(tuple):
    """A row's choices that also contain every value of the form the row further accepts (argparse checks
    ``value in choices``)."""

    def __new__(cls, setting: Setting):
        choices = super().__new__(cls, setting.values)
        choices.setting = setting
        return choices

    def __contains__(self, value) -> bool:
        return self.setting.accepts(value)


def _help(setting: Setting) -> str:
    text = setting.help.replace("%", "%%")
    if setting.kind == BOOL or setting.default is None:
        return text
    return f"{text} (default: {setting.default})"


def add_setting_options(parser: argparse.ArgumentParser, exclude: Iterable[str] = (),
                        table: Sequence[Setting] = SEGMENT_SETTINGS) -> List[Setting]:
    """Add the options of every row of ``table`` not in ``exclude`` (names or groups) to ``parser``; returns
    the rows."""
    rows = settings_for(exclude, table)
    groups: Dict[str, argparse._ArgumentGroup] = {}
    for s in rows:
        group = groups.get(s.group) or groups.setdefault(s.group, parser.add_argument_group(s.group))
        flags = [s.flag] + [f"--{alias}" for alias in s.cli_aliases]
        common = dict(dest=s.name, default=s.default, help=_help(s))
        if s.kind == BOOL:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
        elif s.kind == CHOICE and s.also_accepts:
            group.add_argument(*flags, choices=_Choices(s), metavar="{" + ",".join(s.spelled_values) + "}", **common)
        elif s.kind == CHOICE:
            group.add_argument(*flags, choices=s.values, **common)
        elif s.kind in (INT, FLOAT):
            group.add_argument(*flags, type=_number_type(s), metavar="N", **common)
        elif s.kind == BANDS:
            group.add_argument(*flags, type=_bands_type, metavar="B[,B,B]", **common)
        elif s.kind == NAMES:
            group.add_argument(*flags, type=parse_class_list, metavar="NAME,…", **common)
        else:  # FILE, FOLDER, FIELD: text as given
            group.add_argument(*flags, metavar=s.kind.upper(), **common)
    return rows


def options_from_args(args: argparse.Namespace, **fixed):
    """``SegmentOptions`` of the parsed setting options (those a command did not offer keep their defaults);
    ``fixed``: settings the command decides itself (e.g. the ablation's prompt). Checked, backend resolved."""
    values = {s.name: getattr(args, s.name) for s in settings_for() if hasattr(args, s.name)}
    values.update(fixed)
    return make_options(values)
