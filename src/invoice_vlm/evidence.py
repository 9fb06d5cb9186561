"""Where on the page each value was read: a box per field, so a reviewer sees it and an invented value stands out.

A value is looked for on the page's words (the OCR backend's own, a PDF's text layer, or OCR of the page) by its
kind, not only by its text: an amount ``1234.5`` is found where ``1.234,50`` is printed, a date ``2024-03-14``
where ``3/14/2024`` is, a currency ``EUR`` where ``€`` is. Each leaf value gets an `Evidence`: the page, the box in
0-1 coordinates of that page (left, top, right, bottom), the text printed there and a match score; a value found
nowhere on the page is marked ``found=False``, a hint that the model invented it.

Examples:
    >>> from invoice_vlm import get_schema
    >>> words = [Word("Total:", (0.1, 0.8, 0.2, 0.85)), Word("1.234,50 €", (0.3, 0.8, 0.45, 0.85))]
    >>> found = locate({"total": 1234.5, "currency": "EUR"}, get_schema("invoice"), words)
    >>> found["total"].text, found["total"].box, found["currency"].found
    ('1.234,50', (0.3, 0.8, 0.42, 0.85), True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from invoice_vlm._text import similarity
from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas.fields import LeafField

__all__ = ["Evidence", "Word", "locate", "words_from_boxes"]

Box = tuple[float, float, float, float]

MIN_TEXT_SCORE = 0.8
"""The least similarity (0-1, after case and punctuation are ignored) at which a text value counts as found."""
_MAX_SPAN = 8  # words of one line a value may span ("3. März 2024", "Gould-Foster, 9083 Christopher Manor")
_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Word:
    """A word (or a run of words) printed on a page, with its box in 0-1 page coordinates (left, top, right, bottom).

    ``turn``: when the page was read turned upright (a page photographed sideways), by how many degrees
    counter-clockwise; the box is then in the upright page's coordinates, and `Evidence` boxes are turned back to
    the page as it was given.
    """

    text: str
    box: Box
    page: int = 0
    turn: int = 0


@dataclass(frozen=True)
class Evidence:
    """Where one value was read.

    Attributes:
        found: whether the value is printed on the page (as printed text of its kind).
        page: the page it was found on (0-based), or ``None``.
        box: its box on that page in 0-1 coordinates (left, top, right, bottom), or ``None``.
        text: the text printed there (``"1.234,50"`` for an amount ``1234.5``).
        score: how well the printed text matches the value: 1.0 for the same value in any printed form of its kind,
            the similarity of the closest text otherwise (also when not found).
    """

    found: bool
    page: int | None = None
    box: Box | None = None
    text: str = ""
    score: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return {
            "found": self.found,
            "page": self.page,
            "box": list(self.box) if self.box else None,
            "text": self.text,
            "score": round(self.score, 4),
        }


def words_from_boxes(
    boxes: Iterable[tuple[str, float, float, float, float]], width: float, height: float, page: int = 0
) -> list[Word]:
    """Words from ``(text, left, top, right, bottom)`` pixel boxes of a ``width`` x ``height`` page."""
    out = []
    for text, x0, y0, x1, y1 in boxes:
        if text.strip() and width > 0 and height > 0:
            box = (
                _clip(min(x0, x1) / width),
                _clip(min(y0, y1) / height),
                _clip(max(x0, x1) / width),
                _clip(max(y0, y1) / height),
            )
            out.append(Word(text, box, page))
    return out


def _clip(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 4)


@dataclass(frozen=True)
class _Span:
    text: str
    box: Box
    page: int
    turn: int = 0
    line: int = 0
    start: int = 0
    end: int = 0


def _unturn(box: Box, angle: int) -> Box:
    """A 0-1 box of a page turned upright by ``angle`` degrees, in the coordinates of the page as given."""

    def point(u: float, v: float) -> tuple[float, float]:
        if angle == 90:
            return 1 - v, u
        if angle == 180:
            return 1 - u, 1 - v
        if angle == 270:
            return v, 1 - u
        return u, v

    (a, b), (c, d) = point(box[0], box[1]), point(box[2], box[3])
    return (round(min(a, c), 4), round(min(b, d), 4), round(max(a, c), 4), round(max(b, d), 4))


def _lines(words: Sequence[Word]) -> list[list[Word]]:
    """Words grouped into printed lines (vertical centres within a line's height), each read left to right."""
    lines: list[list[Word]] = []
    for word in sorted(words, key=lambda w: (w.page, (w.box[1] + w.box[3]) / 2, w.box[0])):
        centre = (word.box[1] + word.box[3]) / 2
        line = lines[-1] if lines else None
        if line and line[0].page == word.page and line[0].box[1] <= centre <= line[0].box[3]:
            line.append(word)
        else:
            lines.append([word])
    return [sorted(line, key=lambda w: w.box[0]) for line in lines]


_TOKEN = re.compile(r"[^\s:]+:?|:")  # "Dock:38" is a label and a value glued: "Dock:", "38"


def _tokens(line: list[Word], number: int) -> list[_Span]:
    """A line's words split at spaces (and after a label's colon), each boxed by its share of the run's characters."""
    out: list[_Span] = []
    for word in line:
        x0, y0, x1, y1 = word.box
        n = max(len(word.text), 1)
        for match in _TOKEN.finditer(word.text):
            left = x0 + (x1 - x0) * match.start() / n
            right = x0 + (x1 - x0) * match.end() / n
            box = (round(left, 4), y0, round(right, 4), y1)
            out.append(_Span(match.group(), box, word.page, word.turn, number, len(out), len(out) + 1))
    return out


def clickable_words(words: Sequence[Word]) -> list[dict[str, Any]]:
    """The pages' words one by one, as plain data for the review page.

    Runs are split at spaces and after a label's colon; each gives ``text``, ``page`` and ``box`` on the page as it
    was given (turned back when it was read turned).
    """
    return [
        {"text": span.text, "page": span.page, "box": list(_unturn(span.box, span.turn))}
        for word in words
        for span in _tokens([word], 0)
    ]


class _Page:
    """Every run of up to a few consecutive tokens of one line, in reading order, and what precedes each."""

    def __init__(self, words: Sequence[Word]) -> None:
        self.lines = [_tokens(line, i) for i, line in enumerate(_lines(words))]
        self.spans: list[_Span] = []
        for number, tokens in enumerate(self.lines):
            for start in range(len(tokens)):
                for end in range(start + 1, min(start + _MAX_SPAN, len(tokens)) + 1):
                    part = tokens[start:end]
                    box = (
                        min(t.box[0] for t in part),
                        min(t.box[1] for t in part),
                        max(t.box[2] for t in part),
                        max(t.box[3] for t in part),
                    )
                    text = " ".join(t.text for t in part).strip(":")
                    if text:
                        self.spans.append(_Span(text, box, part[0].page, part[0].turn, number, start, end))

    def labelled(self, span: _Span, labels: Sequence[str]) -> bool:
        """Whether one of ``labels`` is printed just left of the span, or just above it."""
        keys = [_key(label) for label in labels if _key(label)]
        if not keys:
            return False
        tokens = self.lines[span.line]
        for k in range(1, 5):
            if span.start - k < 0:
                break
            left = _key("".join(t.text for t in tokens[span.start - k : span.start]))
            if any(left.endswith(key) for key in keys):
                return True
        if span.line > 0:
            above = self.lines[span.line - 1]
            over = [t for t in above if t.box[0] < span.box[2] and span.box[0] < t.box[2]]
            text = _key("".join(t.text for t in over))
            return any(text.endswith(key) or text == key for key in keys)
        return False


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.casefold())


def _reads_as(text: str, kind: str, value: Any) -> bool:
    """Whether printed ``text`` normalises to ``value`` for its kind.

    The normaliser's own reading, so every printed form it accepts is found; a numeric date in any order (the page
    may be day- or month-first).
    """
    from invoice_vlm.normalize import normalize_value

    for order in ("DMY", "MDY", "YMD") if kind == "date" else (None,):
        read = normalize_value(text, kind, date_order=order)
        if read.error is not None or read.value is None:
            continue
        if kind in ("integer", "decimal"):
            try:
                if Decimal(str(read.value)) == Decimal(str(value)):
                    return True
            except InvalidOperation:
                return False
        elif str(read.value) == (str(value).upper() if kind == "currency" else str(value)):
            return True
    return False


_TYPED = ("integer", "decimal", "date", "currency")


class _Locator:
    """Finds values on one document's pages; a place taken by one value is the last choice for another."""

    def __init__(self, words: Sequence[Word]) -> None:
        self.page = _Page(words)
        self.taken: set[tuple[int, int, int]] = set()
        self.rows: dict[str, list[_Span]] = {}  # a list item's path -> where its text values were found

    def find(self, path: str, leaf: LeafField, value: Any, printed: str | None) -> Evidence:
        spans = self.page.spans
        kind = leaf.kind
        exact: list[_Span] = []
        if printed and _key(printed):
            exact = [s for s in spans if _key(s.text) == _key(printed)]
        if not exact and kind in _TYPED:
            # Digits are needed for an amount or a date; a currency may be a sign or a code beside its amount.
            exact = [
                s
                for s in spans
                if (len(s.text) <= 24 if kind == "currency" else any(c.isdigit() for c in s.text))
                and _reads_as(s.text, kind, value)
            ]
        elif not exact:
            wanted = _key(str(value))
            exact = [s for s in spans if wanted and _key(s.text) == wanted]
        if not exact and kind in _TYPED:
            exact = self._inside(kind, value, printed)
        item = path[: path.rfind("]") + 1]
        if exact:
            row = self.rows.get(item, [])

            def rank(span: _Span) -> tuple[int, int, int, int]:
                claimed = (span.line, span.start, span.end) in self.taken
                in_row = any(
                    span.page == r.page and r.box[1] <= (span.box[1] + span.box[3]) / 2 <= r.box[3]
                    for r in row
                )
                return (
                    int(claimed),
                    -int(in_row),
                    -int(self.page.labelled(span, leaf.labels)),
                    len(span.text),
                )

            best = min(exact, key=rank)  # stable: the first in reading order among equals
            return self._take(best, 1.0, item, kind)
        if kind in _TYPED:  # an amount or a date printed nowhere: similar digits elsewhere are not it
            return Evidence(False)
        return self._similar(str(value), item, kind)

    def _inside(self, kind: str, value: Any, printed: str | None) -> list[_Span]:
        """The value glued to other text in one token (``17-03-201815:22:52``), boxed by its share of the token."""
        out = []
        for tokens in self.page.lines:
            for token in tokens:
                where: tuple[int, int] | None = None
                if printed and len(printed.strip()) >= 3 and printed.strip() in token.text:
                    at = token.text.index(printed.strip())
                    where = (at, at + len(printed.strip()))
                elif kind == "date":
                    from invoice_vlm.backends.ocr.keys import find_date

                    seen = find_date(token.text)
                    if seen and seen[1].isoformat() == str(value) and seen[0] in token.text:
                        at = token.text.index(seen[0])
                        where = (at, at + len(seen[0]))
                if where is None:
                    continue
                x0, y0, x1, y1 = token.box
                n = max(len(token.text), 1)
                box = (
                    round(x0 + (x1 - x0) * where[0] / n, 4),
                    y0,
                    round(x0 + (x1 - x0) * where[1] / n, 4),
                    y1,
                )
                text = token.text[where[0] : where[1]]
                out.append(_Span(text, box, token.page, token.turn, token.line, token.start, token.end))
        return out

    def _take(self, span: _Span, score: float, item: str, kind: str) -> Evidence:
        self.taken.add((span.line, span.start, span.end))
        if item and kind not in _TYPED:
            self.rows.setdefault(item, []).append(span)
        return Evidence(True, span.page, _unturn(span.box, span.turn), span.text, score)

    def _similar(self, value: str, item: str, kind: str) -> Evidence:
        """A text value by similarity; a value printed over several lines (an address) part by part."""
        wanted = _key(value)
        if not wanted:
            return Evidence(False)
        best: tuple[float, _Span] | None = None
        for span in self.page.spans:
            got = _key(span.text)
            if not got or not 0.5 * len(wanted) <= len(got) <= 1.5 * len(wanted):
                continue
            score = similarity(got, wanted)
            if best is None or score > best[0] or (score == best[0] and len(span.text) < len(best[1].text)):
                best = (score, span)
        parts = [p for p in re.split(r"\s*[,\n]\s*", value) if _key(p)]
        if len(parts) > 1:
            pieces = [self._part(part) for part in parts]
            if all(p is not None for p in pieces):
                found = [p for p in pieces if p is not None]
                if len({p[1].page for p in found}) == 1 and (
                    best is None or min(p[0] for p in found) >= best[0]
                ):
                    box = (
                        min(p[1].box[0] for p in found),
                        min(p[1].box[1] for p in found),
                        max(p[1].box[2] for p in found),
                        max(p[1].box[3] for p in found),
                    )
                    merged = _Span(
                        ", ".join(p[1].text for p in found), box, found[0][1].page, found[0][1].turn
                    )
                    return self._take(merged, min(p[0] for p in found), item, kind)
        if best is None:
            return Evidence(False)
        score, span = best
        if score < MIN_TEXT_SCORE:
            return Evidence(False, score=score)
        return self._take(span, score, item, kind)

    def _part(self, part: str) -> tuple[float, _Span] | None:
        wanted = _key(part)
        scored = [
            (similarity(_key(s.text), wanted), s)
            for s in self.page.spans
            if 0.5 * len(wanted) <= len(_key(s.text)) <= 1.5 * len(wanted)
        ]
        if not scored:
            return None
        score, span = max(scored, key=lambda pair: (pair[0], -len(pair[1].text)))
        return (score, span) if score >= MIN_TEXT_SCORE else None


def _values(value: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [pv for key, child in value.items() for pv in _values(child, f"{path}.{key}" if path else key)]
    if isinstance(value, list):
        return [pv for i, child in enumerate(value) for pv in _values(child, f"{path}[{i}]")]
    return [] if value is None or value == "" else [(path, value)]


def locate(
    data: Mapping[str, Any],
    spec: SchemaSpec,
    words: Sequence[Word],
    printed: Mapping[str, str] | None = None,
) -> dict[str, Evidence]:
    """Find each leaf value of ``data`` among a document's ``words``: leaf path -> `Evidence`.

    Args:
        data: the document (canonical values, as `Extraction.to_dict` or ``partial`` holds them).
        spec: its schema; each leaf's kind says which printed forms count as the value.
        words: the pages' words with their boxes (`Word`).
        printed: leaf path -> the text as printed, where normalisation changed it (`Extraction.printed`).

    Booleans are not looked for (a tick box has no text to point at).
    """
    locator = _Locator(words)
    out: dict[str, Evidence] = {}
    found = []
    for path, value in _values(dict(data)):
        leaf = spec.tree.leaf(_INDEX.sub("", path))
        if leaf is None or leaf.kind == "boolean" or isinstance(value, bool):
            continue
        found.append((path, leaf, value))
    # Text first: a line item's description tells which of several equal numbers on the page is its quantity.
    for path, leaf, value in sorted(found, key=lambda entry: entry[1].kind in _TYPED):
        out[path] = locator.find(path, leaf, value, (printed or {}).get(path))
    return {path: out[path] for path, _, _ in found}
