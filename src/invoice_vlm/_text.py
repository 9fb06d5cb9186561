"""Text helpers shared by the metrics, the offline reader and normalisation (low in the tree: imports nothing of ours).

Edit distance comes from rapidfuzz (C++, well kept) rather than a hand-written loop.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["as_number", "levenshtein", "similarity"]

_NUMBER = re.compile(r"^[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?$")


def levenshtein(a: str, b: str) -> int:
    """Edit distance with unit insert, delete and substitute costs.

    Examples:
        >>> levenshtein("P24812736099", "P24812736O99")
        1
    """
    from rapidfuzz.distance import Levenshtein

    return int(Levenshtein.distance(a, b))


def similarity(a: str, b: str) -> float:
    """``1 - edit distance / longer length``, also compared without spaces (OCR runs words together).

    Examples:
        >>> round(similarity("shlpment id", "shipment id"), 3), similarity("palletnumber", "pallet number")
        (0.909, 1.0)
    """
    if not a or not b:
        return 0.0
    from rapidfuzz.distance import Levenshtein

    plain = float(Levenshtein.normalized_similarity(a, b))
    a2, b2 = a.replace(" ", ""), b.replace(" ", "")
    if not a2 or not b2:
        return plain
    return max(plain, float(Levenshtein.normalized_similarity(a2, b2)))


def as_number(value: Any) -> float | None:
    """A JSON number, or a string such as ``"1,012.50"``, as a float; ``None`` for anything else.

    Examples:
        >>> as_number("1,012.50"), as_number(3), as_number("12 pcs")
        (1012.5, 3.0, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        if text and _NUMBER.match(text) and any(c.isdigit() for c in text):
            return float(text.replace(",", ""))
    return None
