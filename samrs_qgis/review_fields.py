"""The review of a result layer as stored in it: field names and decision values (no QGIS).

The review dock (``gui/review.py``) writes them into a polygon layer, :mod:`.review_export` reads them:

* ``review``: :data:`ACCEPTED`, :data:`REJECTED` or :data:`RELABELLED`; empty (null) for a mask not reviewed;
* ``class_orig``: the class a relabelled mask had before (its new class is in ``class_name`` / ``class_id``).
"""
from __future__ import annotations

from typing import Optional

REVIEW_FIELD = "review"
ORIGINAL_CLASS_FIELD = "class_orig"
ACCEPTED, REJECTED, RELABELLED = "accepted", "rejected", "relabelled"


def review_decision(value) -> Optional[str]:
    """A stored review value as text without surrounding blanks; None for a null or blank one (not reviewed)."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
