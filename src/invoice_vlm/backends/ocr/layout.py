"""A schema-guided layout parser: OCR text boxes in, a document for the schema out. Pure Python.

How it reads a page:

1. **Deskew and rows.** The page's slope is the median slope of wide text boxes; every box is rotated back by it and
   boxes are grouped into rows by their centres, so a photo taken at an angle reads like a scan.
2. **Labels.** Each leaf field's labels (``json_schema_extra={"labels": [...]}`` or the humanised field name) are
   matched to the start of a box's text, fuzzily (OCR drops letters: ``Shlpment ID``, ``Destinaton``), before a
   colon when there is one.
3. **Values.** The rest of the box after its label; else the next box to the right on the same row (key/value and
   two-column layouts); else the box below the label (label above value); else, for a ``Label:`` with nothing
   found beside it, the strip to its right is read again on its own (detectors miss lone digits). A value that
   ends with a comma goes on in the box below it (wrapped addresses).
4. **Sections.** A nested object (an invoice's ``seller``) is a block under its heading (``Seller``, ``Bill To``):
   labelled lines go to their fields, unlabelled lines fill the remaining fields in order, the last taking the rest.
5. **Tables.** A list of objects (``products``) is read from the rows under a header row that matches at least two of
   the item fields' labels, up to a row holding another field's label or the end of the page; each cell goes to the
   column whose header it lines up with.
   A row starting with a footer word (``Total``, ``Totals``, ``Grand total``, ``Sum``, ``Gesamt``, ``Totaal``,
   ``Total TTC``...) ends the table and is never an item: its cells go to the fields that add up their columns
   (``sum_of``), e.g. ``Totals | 30 | 11 | 7`` to ``total_cases``, ``total_units`` and ``total_layers``.
6. **Characters.** OCR's usual confusions are mended by field kind: ``O``->``0``, ``l``/``I``->``1``, ``S``->``5``
   inside numbers (and between digits in codes); ``0``->``O`` in words of text fields (``FL00R``, ``0F``). A field
   whose schema gives an ``ocr_pattern`` has its spacing around ``-`` repaired to match it.
7. **Currency.** When the schema has a currency field the page does not label, the currency printed beside the
   amounts (``€``, ``$``, ``₹``, ``EUR 49,99``) fills it, if the page shows only one.

Values are returned as printed (after the repairs above); `invoice_vlm.normalize` turns them into canonical values
for every backend alike. Every value remembers the OCR scores of the boxes it came from, which become the
extraction's confidence. Nothing here names a template: the schema's field tree (labels, kinds, totals) is all it
knows.
"""

from __future__ import annotations

import functools
import math
import re
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from invoice_vlm._text import similarity as _similarity
from invoice_vlm.backends.ocr.keys import (
    context_currency,
    find_date,
    issue_date_box,
    join_address,
    read_letterhead,
    read_payable,
)
from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas.fields import LeafField, ObjectNode

__all__ = [
    "Box",
    "Reading",
    "RegionReader",
    "Value",
    "mend_confusions",
    "parse_layout",
    "plausible",
    "read_layout",
]

_NORM = re.compile(r"[^0-9a-z#]+")


@dataclass
class Box:
    """One OCR text box: its text, recognition score and corner points (clockwise from top-left)."""

    text: str
    score: float
    points: Sequence[tuple[float, float]]
    x0: float = 0.0
    y0: float = 0.0
    x1: float = 0.0
    y1: float = 0.0
    used: bool = False

    @property
    def cx(self) -> float:
        """Horizontal centre (deskewed)."""
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        """Vertical centre (deskewed)."""
        return (self.y0 + self.y1) / 2

    @property
    def height(self) -> float:
        """Height (deskewed)."""
        return self.y1 - self.y0


@dataclass
class Value:
    """A value read off the page and the OCR scores of the boxes it came from."""

    text: str
    scores: list[float] = field(default_factory=list)

    @property
    def confidence(self) -> float:
        """The lowest score of its boxes."""
        return min(self.scores) if self.scores else 0.0


def _norm(text: str) -> str:
    """Lower case, accents folded (``Désignation`` -> ``designation``), punctuation to spaces; ``#`` kept."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(c))
    return _NORM.sub(" ", folded).strip()


# --- geometry ---------------------------------------------------------------------------------------------------


def _deskew(boxes: list[Box]) -> float:
    slopes = []
    for b in boxes:
        (xa, ya), (xb, yb) = b.points[0], b.points[1]
        width = math.hypot(xb - xa, yb - ya)
        height = math.hypot(b.points[3][0] - xa, b.points[3][1] - ya)
        if width > 3 * max(height, 1):
            slopes.append(math.atan2(yb - ya, xb - xa))
    angle = statistics.median(slopes) if slopes else 0.0
    cos, sin = math.cos(-angle), math.sin(-angle)
    for b in boxes:
        xs, ys = [], []
        for x, y in b.points:
            xs.append(x * cos - y * sin)
            ys.append(x * sin + y * cos)
        b.x0, b.x1, b.y0, b.y1 = min(xs), max(xs), min(ys), max(ys)
    return angle


def _rows(boxes: list[Box]) -> list[list[Box]]:
    if not boxes:
        return []
    tolerance = 0.5 * statistics.median(b.height for b in boxes)
    rows: list[list[Box]] = []
    for b in sorted(boxes, key=lambda b: b.cy):
        if rows and abs(b.cy - statistics.fmean(x.cy for x in rows[-1])) <= tolerance:
            rows[-1].append(b)
        else:
            rows.append([b])
    return [sorted(r, key=lambda b: b.x0) for r in rows]


# --- schema view ------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _label_forms(labels: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(_norm(w) for w in labels if _norm(w)))


def _candidates(fields: Sequence[LeafField]) -> list[tuple[str, tuple[str, ...]]]:
    return [(f.key, _label_forms(f.labels)) for f in fields]


# --- label matching ---------------------------------------------------------------------------------------------


def _match_label(
    text: str, candidates: Sequence[tuple[str, tuple[str, ...]]]
) -> tuple[str, str, float] | None:
    """(key, remaining text, rank) of the best label at the start of ``text``, or None.

    The rank orders matches: closer spelling first, then a label followed by a colon, then a longer (more specific)
    label, so ``Pallet Number: 4`` beats the title ``PALLET LABEL`` for ``pallet_number``.
    """
    best: tuple[float, int, str, str] | None = None
    colon = text.find(":")
    heads: list[tuple[str, str, int]] = []
    if colon > 0:
        heads.append((text[:colon], text[colon + 1 :], 99))
    words = text.split()
    for k in range(min(4, len(words)), 0, -1):
        heads.append((" ".join(words[:k]), " ".join(words[k:]), k))
    for head, rest, k in heads:
        normalized = _norm(head)
        if not normalized:
            continue
        for key, labels in candidates:
            for label in labels:
                sim = _similarity(normalized, label)
                threshold = 1.0 if len(label) <= 3 else 0.75
                if abs(len(normalized.replace(" ", "")) - len(label.replace(" ", ""))) > max(
                    1, len(label) // 6
                ):
                    continue  # "Custom" is not a misread "Customer": OCR drops a letter, not a syllable
                rank = round(sim, 2) + (0.05 if k == 99 else 0.0) + 0.001 * len(label)
                if sim >= threshold and (best is None or (rank, k) > (best[0], best[1])):
                    best = (rank, k, key, rest)
    if best is None and words:
        best = _glued_label(words, candidates)
    if best is None:
        return None
    return best[2], best[3].strip().lstrip(":").strip(), best[0]


def _glued_label(
    words: list[str], candidates: Sequence[tuple[str, tuple[str, ...]]]
) -> tuple[float, int, str, str] | None:
    """A label run into its value when OCR lost the colon and the space: ``shlpmentP83285329483``.

    Only a label of one word (five letters or more), spelt closely, followed by text holding a digit.
    """
    token = words[0]
    best: tuple[float, int, str, str] | None = None
    for key, labels in candidates:
        for label in labels:
            if " " in label or len(label) < 5 or len(token) <= len(label):
                continue
            rest = token[len(label) :]
            if not any(c.isdigit() for c in rest):
                continue
            sim = _similarity(_norm(token[: len(label)]), label)
            if sim >= 0.85 and (best is None or sim > best[0]):
                best = (sim - 0.1, 0, key, " ".join([rest, *words[1:]]))
    return best


def _whole_label(
    text: str, candidates: Sequence[tuple[str, tuple[str, ...]]], floor: float = 0.8
) -> str | None:
    """The key whose label the whole of ``text`` is (a table header cell: ``Item Descrtption``), or ``None``."""
    normalized = _norm(text)
    best: tuple[float, str] | None = None
    for key, labels in candidates:
        for label in labels:
            sim = _similarity(normalized, label)
            if sim >= (1.0 if len(label) <= 3 else floor) and (best is None or sim > best[0]):
                best = (sim, key)
    return best[1] if best else None


# --- reading ----------------------------------------------------------------------------------------------------


RegionReader = Callable[[list[tuple[float, float]]], "tuple[str, float] | None"]
"""Reads the text inside a quadrilateral of the original image: ``(text, score)`` or ``None``."""


class _Page:
    def __init__(self, boxes: list[Box], read_region: RegionReader | None = None) -> None:
        self.angle = _deskew(boxes)
        self.rows = _rows(boxes)
        self._row_of = {id(b): i for i, row in enumerate(self.rows) for b in row}
        self.line_height = statistics.median(b.height for b in boxes) if boxes else 10.0
        self.read_region = read_region

    def read_right_of(self, box: Box) -> Value | None:
        """Read the strip right of a label that the detector found nothing in (a lone digit is easy to miss)."""
        if self.read_region is None:
            return None
        row = self.rows[self.row_of(box)]
        limit = min((b.x0 for b in row if b.x0 > box.x1), default=box.x1 + 12 * self.line_height)
        x0, x1 = box.x1 + 2, min(limit - 2, box.x1 + 12 * self.line_height)
        if x1 - x0 < self.line_height:
            return None
        pad = 0.25 * box.height
        corners = [(x0, box.y0 - pad), (x1, box.y0 - pad), (x1, box.y1 + pad), (x0, box.y1 + pad)]
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        found = self.read_region([(x * cos - y * sin, x * sin + y * cos) for x, y in corners])
        if found is None or not found[0].strip() or not any(c.isalnum() for c in found[0]):
            return None
        return Value(found[0].strip(), [found[1]])

    def alias(self, part: Box, whole: Box) -> None:
        """Place ``part`` (a piece of ``whole``'s text) in ``whole``'s row."""
        self._row_of[id(part)] = self.row_of(whole)

    def row_of(self, box: Box) -> int:
        """Index of the row holding ``box`` (by identity: two boxes may read the same)."""
        return self._row_of[id(box)]

    def right_of(self, box: Box) -> Box | None:
        row = self.rows[self.row_of(box)]
        later = [b for b in row if b is not box and b.x0 >= box.x0 + 0.6 * (box.x1 - box.x0) and not b.used]
        return later[0] if later else None

    def below(self, box: Box, align: str = "left") -> Box | None:
        index = self.row_of(box)
        for row in self.rows[index + 1 : index + 3]:
            if row[0].cy - box.cy > 3.2 * self.line_height:
                return None
            for b in row:
                if b.used:
                    continue
                if align == "left" and abs(b.x0 - box.x0) <= max(20.0, 0.8 * self.line_height):
                    return b
                if align == "inside" and box.x0 - 30 <= b.x0 <= box.x1 + 30:
                    return b
        return None


def _continue(page: _Page, box: Box, value: Value, labelled: set[int]) -> None:
    """Append the following lines of a value that ends with a comma (wrapped text)."""
    current = box
    while value.text.rstrip().endswith(","):
        row = page.rows[page.row_of(current)]
        beside = [b for b in row if b.x0 > current.cx and not b.used and id(b) not in labelled]
        if beside and beside[0].x0 - current.x1 < 2.0 * page.line_height:  # the detector split one line
            nxt = beside[0]
            nxt.used = True
            value.text = f"{value.text.rstrip()} {nxt.text.strip()}"
            value.scores.append(nxt.score)
            current = nxt
            continue
        index = page.row_of(current)
        if index + 1 >= len(page.rows):
            return
        row = [b for b in page.rows[index + 1] if not b.used and id(b) not in labelled]
        if not row or row[0].cy - current.cy > 2.2 * page.line_height:
            return
        nxt = min(row, key=lambda b: abs(b.x0 - current.x0))
        if nxt.x0 < box.x0 - 40:
            return
        nxt.used = True
        value.text = f"{value.text.rstrip()} {nxt.text.strip()}"
        value.scores.append(nxt.score)
        current = nxt


_TO_DIGIT = str.maketrans({"O": "0", "o": "0", "l": "1", "I": "1", "|": "1", "S": "5", "s": "5"})
_DIGIT_TOKEN = re.compile(r"[0-9OolI|Ss.,'\u2019]+")
_CONFUSABLE_BETWEEN_DIGITS = re.compile(r"(?<=\d)[OolI|S](?=\d)")
_SAME_SEPARATORS = re.compile(r"(\d{1,3}(?:([.,])\d{3})+)\2(\d{2})(?!\d)")
_ZERO_WORD = re.compile(r"\b[A-Z0]*0[A-Z0]*\b")
_LOWER_I = re.compile(r"(?<=[a-z])I(?![A-Za-z])")


def mend_confusions(text: str, kind: str) -> str:
    """Undo OCR's usual letter/digit confusions where the field's kind says which one was meant.

    Examples:
        >>> mend_confusions("1O,5O", "decimal"), mend_confusions("P2481273O99", "code")
        ('10,50', 'P2481273099')
        >>> mend_confusions("1.430.58", "decimal")
        '1.430,58'
        >>> mend_confusions("ROLL 0F FL00R TILE 100G", "text")
        'ROLL OF FLOOR TILE 100G'
    """
    if kind in ("integer", "decimal"):

        def digits(m: re.Match[str]) -> str:
            token = m.group()
            return token.translate(_TO_DIGIT) if any(c.isdigit() for c in token) else token

        mended = _DIGIT_TOKEN.sub(digits, text)
        if kind == "decimal":
            # "1.430.58": grouping dots and then two final digits - OCR read the decimal comma as a dot.
            mended = _SAME_SEPARATORS.sub(
                lambda m: m.group(1) + {".": ",", ",": "."}[m.group(2)] + m.group(3), mended
            )
        return mended
    if kind in ("code", "date"):
        return _CONFUSABLE_BETWEEN_DIGITS.sub(lambda m: m.group().translate(_TO_DIGIT), text)
    if kind == "text":
        # A word of capitals with zeros in it and no other digit is a word misread: FL00R, 0F -> FLOOR, OF.
        text = _ZERO_WORD.sub(
            lambda m: m.group().replace("0", "O") if any(c.isalpha() for c in m.group()) else m.group(), text
        )
        return _LOWER_I.sub("l", text)  # a capital I ending a lower-case word is an l: "Fietsenwinkel.nI"
    return text


_NUMBER_SIGN = re.compile(r"^(?:N[°º]|No\.|Nr\.|#)\s*(?=\w)", re.IGNORECASE)


def _coerce(f: LeafField, value: Value) -> Any:
    if f.many:  # a list of values printed after one label: "Lots: A12, B34; C56"
        # A comma inside a number (1,200 or 4,50) does not split it; a comma and a space does.
        split = r"\s*[;|]\s*|,\s+" if f.kind in ("integer", "decimal") else r"\s*[,;|]\s*"
        items = [part for part in re.split(split, value.text) if part.strip()]
        return [_coerce_one(f, Value(item, value.scores)) for item in items]
    return _coerce_one(f, value)


def _coerce_one(f: LeafField, value: Value) -> Any:
    text = mend_confusions(" ".join(value.text.split()), f.kind)
    if f.kind == "date":
        from invoice_vlm.normalize import normalize_date

        if normalize_date(text) is None:  # "17-03-2018 15:22", ":23-03-2018", "17-03-201815:22:52"
            found = find_date(text)
            if found is not None:
                return found[0]
    if f.kind == "code":
        text = _NUMBER_SIGN.sub("", text)  # "N°INV-2024-7": the label's number sign, run into the value
    if f.ocr_pattern is not None:
        pattern = re.compile(f.ocr_pattern)
        if not pattern.match(text):
            for variant in _spacing_variants(text):
                if pattern.match(variant):
                    return variant
    return text


def _spacing_variants(text: str) -> list[str]:
    """The text with its dashes respaced, or with one space added or removed: OCR's usual spacing slips."""
    variants = [re.sub(r"\s*-\s*", " - ", text), re.sub(r"\s*-\s*", "-", text)]
    variants += [
        re.sub(r"\s*[\u00b7\u2022\u2013\u2014~]\s*", " - ", text)
    ]  # a dash read as a dot or an en dash
    variants += [text[:i] + " " + text[i:] for i in range(1, len(text))]
    variants += [text[:i] + text[i + 1 :] for i, ch in enumerate(text) if ch == " "]
    return variants


def _read_fields(
    page: _Page, boxes: list[Box], obj: ObjectNode, out: dict[str, Any], conf: dict[str, float], prefix: str
) -> None:
    candidates = _candidates(obj.fields)
    by_key = {f.key: f for f in obj.fields}
    matches: list[tuple[Box, str, str, float]] = []
    for box in boxes:
        if box.used or box.height > 1.5 * page.line_height:
            continue  # a title in a larger font ("PALLET") is not a label
        found = _match_label(box.text, candidates)
        if found:
            matches.append((box, *found))
    labelled = {id(b) for b, *_ in matches}
    per_key: dict[str, list[tuple[Box, str, float]]] = {}
    for box, key, rest, rank in matches:
        if key not in out:  # a key already decided (a table footer, the amounts' arithmetic) takes no label
            per_key.setdefault(key, []).append((box, rest, rank))
    values: list[tuple[str, Box, Value]] = []
    for key, options in per_key.items():
        # Best label first; a title that only looks like a label ("LOAD TAG") has no plausible value for the
        # field's kind, so the next label is tried, and an implausible value is taken only when nothing else is.
        fallback: tuple[Box, Box, Value] | None = None
        chosen: tuple[Box, Box, Value] | None = None
        for label_box, rest, _rank in sorted(options, key=lambda o: -o[2]):
            if label_box.used:
                continue
            value_box, value, fits = _value_for(page, label_box, rest, labelled, by_key[key])
            if value is None or value_box.used:
                continue
            if fits:
                chosen = (label_box, value_box, value)
                break
            fallback = fallback or (label_box, value_box, value)
        chosen = chosen or fallback
        if chosen is not None:
            label_box, value_box, value = chosen
            label_box.used = value_box.used = True
            values.append((key, value_box, value))
    for key, value_box, value in sorted(values, key=lambda kv: (kv[1].cy, kv[1].x0)):
        _continue(page, value_box, value, labelled)
        if key in out:
            continue  # a table footer already gave this total
        out[key] = _coerce(by_key[key], value)
        conf[f"{prefix}{key}"] = value.confidence


def plausible(leaf: LeafField, text: str) -> bool:
    """Whether ``text`` can be a value of ``leaf``'s kind: numbers, dates and codes hold a digit, amounts are no rate.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> tax = get_schema("invoice").tree.leaf("tax")
        >>> plausible(tax, "19 %"), plausible(tax, "442,79 €")
        (False, True)
    """
    t = text.strip()
    if not any(c.isalnum() for c in t):
        return False
    if leaf.kind in ("integer", "decimal"):
        return any(c.isdigit() for c in mend_confusions(t, leaf.kind)) and not t.endswith("%")
    if leaf.kind == "date":
        return find_date(t) is not None
    if leaf.kind == "code":
        return any(c.isdigit() for c in t)
    return True


def _value_for(
    page: _Page, box: Box, rest: str, labelled: set[int], leaf: LeafField
) -> tuple[Box, Value | None, bool]:
    """The value of the label in ``box`` (after it in the box, to its right, or below it), and its plausibility."""
    options: list[tuple[Box, Value]] = []
    if rest:
        options.append((box, Value(rest, [box.score])))
    for neighbour in (page.right_of(box), page.below(box)):
        if neighbour is not None and id(neighbour) not in labelled and not neighbour.used:
            options.append((neighbour, Value(neighbour.text, [neighbour.score])))
    if not options and box.text.rstrip().endswith(":"):  # "Total Layers:" promises a value on its right
        found = page.read_right_of(box)
        if found is not None:
            options.append((box, found))
    for value_box, value in options:
        if plausible(leaf, value.text):
            return value_box, value, True
    if options:
        return options[0][0], options[0][1], False
    return box, None, False


def _unlabelled_dates(page: _Page, obj: ObjectNode, out: dict[str, Any], conf: dict[str, float]) -> None:
    """The issue date no label named: the highest dated line that no other date word (due, printed...) heads."""
    for leaf in obj.fields:
        if leaf.kind != "date" or out.get(leaf.key) is not None:
            continue
        if not (leaf.role == "issue_date" or (leaf.required and leaf.role is None)):
            continue
        found = issue_date_box(page)
        if found is not None:
            box, printed = found
            box.used = True
            out[leaf.key] = printed
            conf[leaf.key] = box.score * 0.9  # no label named it


def _read_sections(
    page: _Page, obj: ObjectNode, out: dict[str, Any], conf: dict[str, float], prefix: str
) -> None:
    outer = _candidates(obj.fields) + [(s.key, _label_forms(s.labels)) for s in obj.sections]
    for section in obj.sections:
        key, labels = section.key, _label_forms(section.labels)
        heading, best = None, 0.8
        for row in page.rows:
            for box in row:
                score = max((_similarity(_norm(box.text), label) for label in labels), default=0.0)
                if not box.used and score > best:
                    heading, best = box, score
        inline: Box | None = None
        if (
            heading is None
        ):  # "Bill to: Norder Logistics Ltd, 4 Dock Rd, Leeds": the heading and its block on one line
            for row in page.rows:
                for box in row:
                    head = _norm(box.text.split(":", 1)[0]) if ":" in box.text and not box.used else ""
                    found = _match_label(box.text, [(key, labels)]) if head in labels else None
                    if found is not None and found[1] and heading is None:
                        heading = box
                        inline = Box(found[1], box.score, box.points, box.x0, box.y0, box.x1, box.y1)
                        page.alias(inline, box)
        if heading is None:
            continue
        heading.used = True
        lines: list[Box] = [inline] if inline is not None else []
        current: Box | None = heading
        while current is not None:
            nxt = page.below(current, align="left")
            if nxt is None or nxt.cy - current.cy > 2.2 * page.line_height:
                break
            own = _match_label(nxt.text, _candidates(section.fields))
            if own is None and _match_label(nxt.text, outer) is not None:
                break  # the next field or section of the page, not a line of this block
            lines.append(nxt)
            nxt.used = True
            current = nxt
        sub: dict[str, Any] = {}
        for line in lines:
            line.used = False
        _read_fields(page, lines, section, sub, conf, f"{prefix}{key}.")
        rest = [b for b in lines if not b.used]
        groups: list[list[Box]] = []
        for b in rest:  # a line ending with a comma goes on in the next line
            if groups and groups[-1][-1].text.rstrip().endswith(","):
                groups[-1].append(b)
            else:
                groups.append([b])
        free = [
            f for f in section.fields if f.key not in sub and f.kind == "text"
        ]  # unlabelled name, address
        if len(groups) == 1 and len(free) >= 2 and len(groups[0]) == 1 and ", " in groups[0][0].text:
            one = groups[0][0]  # "Norder Logistics Ltd, 4 Dock Rd, Leeds": the name, then the address
            name, address = one.text.split(", ", 1)
            first, tail = _split_box(one, name, address)
            groups = [[first], [tail]]
            first.used = tail.used = False
        for i, f in enumerate(free):
            if not groups:
                break
            taken = [b for g in groups for b in g] if i == len(free) - 1 else groups[0]
            groups = [] if i == len(free) - 1 else groups[1:]
            for b in taken:
                b.used = True
            value = Value(" ".join(b.text.strip() for b in taken), [b.score for b in taken])
            sub[f.key] = _coerce(f, value)
            conf[f"{prefix}{key}.{f.key}"] = value.confidence
        for b in rest:
            b.used = True
        for f in section.fields:
            if f.key not in sub and not f.required:
                sub[f.key] = None
        out[key] = sub


def _column_of(box: Box, columns: list[tuple[str, Box]]) -> str:
    return min(
        columns, key=lambda c: min(abs(box.x0 - c[1].x0), abs(box.x1 - c[1].x1), abs(box.cx - c[1].cx))
    )[0]


def _two_headers(box: Box, candidates: Sequence[tuple[str, tuple[str, ...]]]) -> list[tuple[str, Box]]:
    """Two column headers the detector read as one box (``Qté Prix unitaire``), split where both halves are labels.

    Each half gets the share of the box's width its characters take.
    """
    words = box.text.split()
    if _whole_label(box.text, candidates, floor=0.95) is not None:
        return []  # "Case Qty" is one label, though "Case" and "Qty" are labels too
    for cut in range(1, len(words)):
        left, right = " ".join(words[:cut]), " ".join(words[cut:])
        first, second = _whole_label(left, candidates, 0.9), _whole_label(right, candidates, 0.9)
        if first is not None and second is not None and first != second:
            head, tail = _split_box(box, left, right)
            return [(first, head), (second, tail)]
    return []


def _split_box(box: Box, left: str, right: str) -> tuple[Box, Box]:
    """``box`` cut in two between the words ``left`` and ``right``, each part as wide as its share of the text."""
    cut = box.x0 + (box.x1 - box.x0) * (len(left) + 1) / (len(left) + len(right) + 2)
    return (
        Box(left, box.score, box.points, box.x0, box.y0, cut, box.y1),
        Box(right, box.score, box.points, cut, box.y0, box.x1, box.y1),
    )


def _split_across_columns(
    box: Box, columns: list[tuple[str, Box]], fields: dict[str, LeafField]
) -> list[tuple[Box, str]]:
    """A box the detector ran across two columns (``863970 - WATER PUMP 6``) split at its last word.

    It is split when its left edge lines up with one column and its right edge with another whose kind is a number,
    and its last word reads as that number; each part keeps the box's score.
    """
    by_left = min(columns, key=lambda c: abs(box.x0 - c[1].x0))[0]
    by_right = min(columns, key=lambda c: min(abs(box.x1 - c[1].x1), abs(box.cx - c[1].cx)))[0]
    words = box.text.split()
    leaf = fields.get(by_right)
    if (
        by_left == by_right
        or len(words) < 2
        or leaf is None
        or leaf.kind not in ("integer", "decimal")
        or not re.fullmatch(r"[\d.,'\u2019]+", mend_confusions(words[-1], leaf.kind))
        or box.x1 - box.x0 < 3 * box.height
    ):
        return [(box, _column_of(box, columns))]
    head, tail = _split_box(box, " ".join(words[:-1]), words[-1])
    box.used = True
    return [(head, by_left), (tail, by_right)]


def _footer_values(boxes: list[Box], *, anchor: Box, page: _Page, columns: list[tuple[str, Box]]) -> bool:
    """Whether ``boxes`` are the numbers of the footer row at ``anchor``: near it, none in the first column."""
    first_column = min(columns, key=lambda c: c[1].x0)[0]
    return (
        bool(boxes)
        and abs(boxes[0].cy - anchor.cy) < 1.2 * page.line_height
        and all(_column_of(b, columns) != first_column for b in boxes)
    )


def _is_footer(text: str, footer: tuple[str, ...]) -> bool:
    """A footer row starts with a footer word alone or before a colon (``Totals``, ``Grand total:``)."""
    head = _norm(text.split(":")[0])
    return bool(head) and any(_similarity(head, word) >= (1.0 if len(word) <= 4 else 0.85) for word in footer)


def _read_tables(
    page: _Page,
    obj: ObjectNode,
    out: dict[str, Any],
    conf: dict[str, float],
    prefix: str,
) -> None:
    stop = _candidates(obj.fields)
    for table in obj.tables:
        key = table.key
        item_candidates = _candidates(table.fields)
        header_index, columns = None, []
        for i, row in enumerate(page.rows):
            cols = []
            for box in row:
                pair = _two_headers(
                    box, item_candidates
                )  # "Qté Prix unitaire" is two headers, not a misspelling
                column = None if pair else _whole_label(box.text, item_candidates)
                if column is not None:
                    cols.append((column, box))
                cols.extend(pair)
            if len({c for c, _ in cols}) >= 2:
                header_index, columns = i, cols
                break
        if header_index is None:
            continue
        for box in page.rows[header_index]:
            box.used = True  # the header row, including a box split into two column headers
        fields = {f.key: f for f in table.fields}
        totals = obj.totals_of(table)
        footer = _label_forms(table.footer_labels)
        rows_out: list[dict[str, Any]] = []
        later = page.rows[header_index + 1 :]
        last_taken: list[Box] = []
        for position, row in enumerate(later):
            free = [b for b in row if not b.used]
            if not free:
                continue
            if _is_footer(free[0].text, footer) and not _match_label(free[0].text, stop):
                free[0].used = True
                values = free[1:]
                if not values:  # a photo's perspective can put the footer's numbers a row above or below it
                    near = functools.partial(_footer_values, anchor=free[0], page=page, columns=columns)
                    below = (
                        [b for b in later[position + 1] if not b.used] if position + 1 < len(later) else []
                    )
                    if rows_out and near(last_taken):
                        values = last_taken  # they were taken for an item row without a description
                        rows_out.pop()
                        for path in [p for p in conf if p.startswith(f"{prefix}{key}[{len(rows_out)}].")]:
                            del conf[path]
                    elif near(below):
                        values = below
                for box in values:
                    total = totals.get(_column_of(box, columns))
                    if total is not None and total.key not in out:
                        box.used = True
                        out[total.key] = _coerce(total, Value(box.text, [box.score]))
                        conf[f"{prefix}{total.key}"] = box.score
                break  # the footer ends the table
            if any(_match_label(b.text, stop) for b in free):
                break
            cells: dict[str, list[Box]] = {}
            for box in free:
                for part, column in _split_across_columns(box, columns, fields):
                    cells.setdefault(column, []).append(part)
            if len(cells) < 2:
                break  # a lone line under the table is not a row of it
            record: dict[str, Any] = {}
            index = len(rows_out)
            last_taken = [b for cell in cells.values() for b in cell]
            for column, cell in cells.items():
                for b in cell:
                    b.used = True
                value = Value(" ".join(b.text.strip() for b in cell), [b.score for b in cell])
                record[column] = _coerce(fields[column], value)
                conf[f"{prefix}{key}[{index}].{column}"] = value.confidence
            rows_out.append(record)
        out[key] = rows_out


_CURRENCY_SIGN = re.compile(
    r"[^\W\d_]{0,2}[\u0024\u00a2-\u00a5\u058f\u060b\u09f2\u09f3\u0e3f\u17db\u20a0-\u20c0\ufdfc\ufe69\uff04\uffe0\uffe1\uffe5\uffe6]"
)


def _page_currency(boxes: Sequence[Box]) -> tuple[str, float] | None:
    """The one currency the page prints beside its amounts (``€ 717,97``, ``EUR 49,99``, ``₹``), if only one."""
    from invoice_vlm.normalize import normalize_amount, normalize_currency

    found: dict[str, tuple[str, float]] = {}
    for b in boxes:
        for m in _CURRENCY_SIGN.finditer(b.text):
            if any(unicodedata.category(c) == "Sc" for c in m.group()):
                code = normalize_currency(m.group()) or normalize_currency(m.group()[-1])
                if code:
                    found.setdefault(code, (m.group(), b.score))
        if any(c.isdigit() for c in b.text) and re.search(r"\b[A-Z]{3}\b", b.text):
            _, code = normalize_amount(b.text)
            if code:
                found.setdefault(code, (code, b.score))
    return next(iter(found.values())) if len(found) == 1 else None


@dataclass
class Reading:
    """What the reader made of a page: the document, per-field confidence, and text it saw but did not take.

    Attributes:
        data: the document as printed (before normalisation), in the schema's order.
        confidence: leaf path -> confidence of the value there (OCR score times the margin of the choice).
        printed: leaf path -> text found for a field but not taken (not of the field's kind, or not supported by the
            page's arithmetic), so a reviewer still sees it.
    """

    data: dict[str, Any]
    confidence: dict[str, float]
    printed: dict[str, str]


def read_layout(boxes: list[Box], spec: SchemaSpec, read_region: RegionReader | None = None) -> Reading:
    """Read a document for ``spec`` from OCR boxes: data, per-field confidence and the text left out.

    ``read_region``, when given, re-reads the strip right of a ``Label:`` whose value the detector missed.
    """
    obj = spec.tree
    page = _Page(boxes, read_region)
    out: dict[str, Any] = {}
    conf: dict[str, float] = {}
    printed: dict[str, str] = {}
    _read_tables(page, obj, out, conf, "")
    _read_sections(page, obj, out, conf, "")
    _read_payable(page, obj, out, conf, printed)
    _read_letterhead(page, obj, out, conf)  # before labels: a letterhead word may look like one ("Warung")
    _read_fields(page, [b for row in page.rows for b in row], obj, out, conf, "")
    _unlabelled_dates(page, obj, out, conf)
    for f in obj.fields:
        if f.kind == "currency" and out.get(f.key) is None:
            sign = _page_currency(boxes) or context_currency(boxes)
            if sign is not None:
                out[f.key], conf[f.key] = sign
    for f in obj.fields:
        if f.key not in out and not f.required:
            out[f.key] = None
    for s in (*obj.sections, *obj.tables):
        if s.key not in out and not s.required:
            out[s.key] = None
    _keep_what_fits(out, obj, conf, printed, "")
    return Reading(_in_schema_order(out, obj), conf, printed)


def parse_layout(
    boxes: list[Box], spec: SchemaSpec, read_region: RegionReader | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """Read a document for ``spec`` from OCR boxes; returns the data and per-field confidence (see `read_layout`)."""
    reading = read_layout(boxes, spec, read_region)
    return reading.data, reading.confidence


def _table_sum(out: dict[str, Any], obj: ObjectNode, payable: LeafField) -> Decimal | None:
    """The sum of the item lines' amounts that a part of the payable adds up (``subtotal`` is ``sum_of`` them)."""
    from invoice_vlm.normalize import normalize_amount

    for leaf in obj.fields:
        if leaf.adds_to != payable.key or not leaf.sum_of:
            continue
        table_key, column = leaf.sum_of.rsplit(".", 1)
        rows = out.get(table_key.rsplit(".", 1)[-1])
        if not rows:
            return None
        values = [normalize_amount(str(r.get(column, "")))[0] for r in rows if isinstance(r, dict)]
        if values and all(v is not None for v in values):
            return sum((v for v in values if v is not None), Decimal(0))
    return None


def _read_payable(
    page: _Page, obj: ObjectNode, out: dict[str, Any], conf: dict[str, float], printed: dict[str, str]
) -> None:
    """The amount payable and the parts that add up to it, chosen by the page's arithmetic (`keys.read_payable`).

    A part (subtotal, tax) the arithmetic does not support is left empty; its text goes to ``printed``.
    """
    from invoice_vlm.normalize import normalize_amount

    payable = next((f for f in obj.fields if f.role == "payable"), None)
    if payable is None or payable.key in out:
        return
    known: dict[str, Decimal] = {}
    for key in [f.key for f in obj.fields if f.adds_to == payable.key and out.get(f.key) is not None]:
        value, _ = normalize_amount(str(out[key]))
        if value is not None:
            known[key] = value
    choice = read_payable(page, obj, _table_sum(out, obj, payable), known)
    if choice is None:
        return
    choice.total.box.used = True
    out[payable.key] = _coerce(payable, Value(_amount_text(choice.total), [choice.total.box.score]))
    conf[payable.key] = choice.confidence
    parts = {f.key: f for f in obj.fields if f.adds_to == payable.key}
    for key, leaf in parts.items():
        if key in out:
            continue
        if key not in choice.parts:  # printed, perhaps, but the arithmetic does not support it
            out[key] = None
            continue
        found = choice.parts[key]
        if found is None:  # supported by a value not printed beside a label (the lines' sum)
            continue
        if isinstance(found, Decimal):  # several printed amounts add up to it (two tax rates)
            out[key] = format(found, "f")
            conf[key] = choice.confidence
        else:
            found.box.used = True
            out[key] = _coerce(leaf, Value(_amount_text(found), [found.box.score]))
            conf[key] = min(choice.confidence, found.box.score)
    for key, amount in choice.unsupported:
        if out.get(key) is None:
            printed.setdefault(key, amount.text)


def _amount_text(amount: Any) -> str:
    """The printed amount of a candidate, without the words before it in its box."""
    from invoice_vlm.backends.ocr.keys import _AMOUNT

    matches = list(_AMOUNT.finditer(amount.text))
    if not matches:
        return str(amount.text)
    m = matches[-1]
    head = amount.text[: m.start()].rstrip()
    sign = re.search(r"(?:[^\W\d_]{0,3}[$€£¥₹]|\b[A-Z]{2,3})$", head)  # "RM", "€", "EUR" printed before it
    return f"{sign.group()} {m.group().strip()}" if sign else m.group().strip()


def _read_letterhead(page: _Page, obj: ObjectNode, out: dict[str, Any], conf: dict[str, float]) -> None:
    """The issuer no heading named: the letterhead at the top of the page (`keys.read_letterhead`)."""
    for section in obj.sections:
        if section.role != "issuer" or out.get(section.key) is not None:
            continue
        stops = _candidates(obj.fields) + [(s.key, _label_forms(s.labels)) for s in obj.sections]
        found = read_letterhead(page, stops)
        if found is None:
            continue
        texts = [f for f in section.fields if f.kind == "text"]
        if not texts:
            continue
        sub: dict[str, Any] = {}
        prefix = f"{section.key}."
        name_value = Value(" ".join(b.text.strip() for b in found.name), [b.score for b in found.name])
        sub[texts[0].key] = _coerce(texts[0], name_value)
        conf[prefix + texts[0].key] = name_value.confidence * found.confidence
        if len(texts) > 1 and found.address:
            scores = [b.score for line in found.address for b in line]
            sub[texts[1].key] = _coerce(texts[1], Value(join_address(found.address), scores))
            conf[prefix + texts[1].key] = min(scores) * found.confidence
        contact = [b for line in found.contact for b in line]
        rest = [f for f in section.fields if f.key not in sub]
        if contact and rest:
            partial = ObjectNode(section.path, section.key, (), False, False, tuple(rest), (), (), ())
            _read_fields(page, contact, partial, sub, conf, prefix)
        for box in [*found.name, *(b for line in found.address for b in line), *contact]:
            box.used = True
        for f in section.fields:
            sub.setdefault(f.key, None)
        out[section.key] = sub


def _fits(leaf: LeafField, value: Any) -> bool:
    """Whether a read value is of its field's kind: it normalises, and matches the field's pattern and length."""
    from invoice_vlm.normalize import normalize_value

    if value is None:
        return True
    items = value if (leaf.many and isinstance(value, list)) else [value]
    for item in items:
        if (
            isinstance(item, str)
            and leaf.kind in ("integer", "decimal", "date", "code")
            and not plausible(leaf, item)
        ):
            return False
        found = normalize_value(item, leaf.kind, json_type=leaf.json_type)
        if found.error is not None:
            return False
        canonical = found.value
        if isinstance(canonical, str):
            if leaf.max_length is not None and len(canonical) > leaf.max_length:
                return False
            if leaf.pattern is not None and not re.search(leaf.pattern, canonical):
                return False
    return True


def _keep_what_fits(
    out: dict[str, Any], obj: ObjectNode, conf: dict[str, float], printed: dict[str, str], prefix: str
) -> bool:
    """Empty every optional value that is not of its kind; its text goes to ``printed``.

    ``False`` when a required value of ``obj`` is missing or does not fit, so that an optional parent leaves the whole
    object out.
    """
    whole = True
    for leaf in obj.fields:
        path = f"{prefix}{leaf.key}"
        value = out.get(leaf.key)
        if value is None or value == [] or value == "":
            whole = whole and not leaf.required
            continue
        if _fits(leaf, value):
            continue
        if leaf.required:
            whole = False
            continue
        printed.setdefault(path, value if isinstance(value, str) else str(value))
        out[leaf.key] = None
        conf.pop(path, None)
    for section in obj.sections:
        value = out.get(section.key)
        if not isinstance(value, dict):
            whole = whole and (value is not None or not section.required)
            continue
        if (
            not _keep_what_fits(value, section, conf, printed, f"{prefix}{section.key}.")
            and not section.required
        ):
            _leave_out(out, section.key, value, conf, printed, f"{prefix}{section.key}")
    for table in obj.tables:
        rows = out.get(table.key)
        if not isinstance(rows, list):
            continue
        fine = all(
            _keep_what_fits(row, table, conf, printed, f"{prefix}{table.key}[{i}].")
            for i, row in enumerate(rows)
            if isinstance(row, dict)
        )
        if not fine and not table.required:  # a row whose cells are not of their kinds: not an item table
            _leave_out(out, table.key, rows, conf, printed, f"{prefix}{table.key}")
    return whole


def _leave_out(
    out: dict[str, Any], key: str, value: Any, conf: dict[str, float], printed: dict[str, str], path: str
) -> None:
    """Leave an optional object or table out: its texts go to ``printed``, its scores go."""
    for leaf_path, text in _texts(value, path):
        printed.setdefault(leaf_path, text)
    for scored in [p for p in conf if p == path or p.startswith((f"{path}.", f"{path}["))]:
        del conf[scored]
    out[key] = None


def _texts(value: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in _texts(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [t for i, v in enumerate(value) for t in _texts(v, f"{path}[{i}]")]
    return [] if value is None else [(path, str(value))]


def _in_schema_order(data: dict[str, Any], node: ObjectNode) -> dict[str, Any]:
    """Keys in the schema's order at every level, so the JSON text reads like a training target."""
    children = {s.key: s for s in (*node.sections, *node.tables)}
    ordered: dict[str, Any] = {}
    for key in node.order:
        if key not in data:
            continue
        value, child = data[key], children.get(key)
        if child is not None and child.is_list and isinstance(value, list):
            value = [_in_schema_order(v, child) if isinstance(v, dict) else v for v in value]
        elif child is not None and isinstance(value, dict):
            value = _in_schema_order(value, child)
        ordered[key] = value
    return ordered
