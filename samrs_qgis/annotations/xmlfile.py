"""Reading annotation XML: lxml when present (it knows each element's line), else the standard library."""
from __future__ import annotations

from typing import Any, Optional

from .model import RecordError

try:  # lxml gives elements a ``sourceline``, so problems can name the line of an object
    from lxml import etree as _etree

    _PARSER = _etree.XMLParser(resolve_entities=False, no_network=True)
    _SYNTAX_ERRORS: tuple = (_etree.XMLSyntaxError,)
except ImportError:  # pragma: no cover - lxml is part of the QGIS install on Debian
    import xml.etree.ElementTree as _etree

    _PARSER = None
    _SYNTAX_ERRORS = (_etree.ParseError,)


def parse_root(path: str) -> Any:
    """The root element of an XML file; RecordError (with the line when known) if it is not well-formed."""
    try:
        tree = _etree.parse(path, _PARSER) if _PARSER is not None else _etree.parse(path)
    except _SYNTAX_ERRORS as exc:
        line = getattr(exc, "lineno", None) or (getattr(exc, "position", None) or (None,))[0]
        raise RecordError(f"not well-formed XML ({exc})", line=line) from None
    return tree.getroot()


def line_of(element: Any) -> Optional[int]:
    """1-based line of an element's start tag (lxml), None with the standard library parser."""
    return getattr(element, "sourceline", None)


def text(element: Any, path: str) -> Optional[str]:
    """Stripped text of the child at ``path`` (e.g. ``"bndbox/xmin"``), None when absent or empty."""
    child = element.find(path)
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()
