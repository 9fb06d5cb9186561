"""From model text to a validated `Extraction`: find the JSON object, repair what is safe, validate.

Only repairs that cannot change a value are made (code fences and text around the object, trailing commas). An
output cut off before its object closes is *not* completed: guessing the end of a truncated shipment id would give
wrong data that looks valid, so it is reported with advice to raise ``max_new_tokens``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from json.decoder import scanstring  # type: ignore[attr-defined]  # public but missing from typeshed
from typing import Any

from pydantic import ValidationError

from invoice_vlm.extraction import Extraction
from invoice_vlm.schemas import SchemaSpec

__all__ = [
    "ParsedJSON",
    "check_sums",
    "field_confidence",
    "find_json_object",
    "finish_document",
    "merge_pages",
    "parse_output",
    "read_output",
]

_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_WS = " \t\n\r"


class _JSONSyntaxError(ValueError):
    def __init__(self, message: str, pos: int, truncated: bool = False) -> None:
        super().__init__(message)
        self.pos = pos
        self.truncated = truncated


@dataclass
class ParsedJSON:
    """A JSON object found in a text, with where each leaf value sits in that text.

    Attributes:
        value: the decoded object.
        spans: leaf path (``"products[0].cases"``) -> (start, end) character offsets of the value in the text.
        start: offset of the object's opening brace.
        end: offset just past its closing brace.
        repairs: what had to be repaired to decode it (empty for clean output).
    """

    value: dict[str, Any]
    spans: dict[str, tuple[int, int]]
    start: int
    end: int
    repairs: list[str]


class _Parser:
    """A small JSON parser that records the character span of every leaf and tolerates trailing commas."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.spans: dict[str, tuple[int, int]] = {}
        self.repairs: list[str] = []

    def _skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in _WS:
            i += 1
        return i

    def _expect_more(self, i: int) -> None:
        if i >= len(self.text):
            raise _JSONSyntaxError("the output ends before the JSON object is closed", i, truncated=True)

    def value(self, i: int, path: str) -> tuple[Any, int]:
        i = self._skip(i)
        self._expect_more(i)
        ch = self.text[i]
        if ch == "{":
            return self.object(i, path)
        if ch == "[":
            return self.array(i, path)
        if ch == '"':
            try:
                s, end = scanstring(self.text, i + 1)
            except json.JSONDecodeError as exc:
                truncated = "Unterminated" in exc.msg
                raise _JSONSyntaxError(
                    "the output ends inside a string" if truncated else exc.msg, exc.pos, truncated
                ) from None
            self.spans[path] = (i + 1, end - 1)
            return s, end
        for literal, val in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(literal, i):
                self.spans[path] = (i, i + len(literal))
                return val, i + len(literal)
        m = _NUMBER.match(self.text, i)
        if m:
            self.spans[path] = (i, m.end())
            num = m.group()
            return (float(num) if any(c in num for c in ".eE") else int(num)), m.end()
        raise _JSONSyntaxError(f"unexpected character {ch!r} at offset {i}", i)

    def object(self, i: int, path: str) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        i = self._skip(i + 1)
        self._expect_more(i)
        if self.text[i] == "}":
            return out, i + 1
        while True:
            i = self._skip(i)
            self._expect_more(i)
            if self.text[i] == "}":  # a trailing comma before the brace
                self.repairs.append(f"removed a trailing comma before offset {i}")
                return out, i + 1
            if self.text[i] != '"':
                raise _JSONSyntaxError(f"expected a quoted key at offset {i}, found {self.text[i]!r}", i)
            try:
                key, i = scanstring(self.text, i + 1)
            except json.JSONDecodeError as exc:
                raise _JSONSyntaxError("the output ends inside a key", exc.pos, truncated=True) from None
            i = self._skip(i)
            self._expect_more(i)
            if self.text[i] != ":":
                raise _JSONSyntaxError(f"expected ':' after key {key!r} at offset {i}", i)
            if key in out:
                raise _JSONSyntaxError(f"key {key!r} appears twice", i)
            out[key], i = self.value(i + 1, f"{path}.{key}" if path else key)
            i = self._skip(i)
            self._expect_more(i)
            if self.text[i] == ",":
                i += 1
                continue
            if self.text[i] == "}":
                return out, i + 1
            raise _JSONSyntaxError(f"expected ',' or '}}' at offset {i}, found {self.text[i]!r}", i)

    def array(self, i: int, path: str) -> tuple[list[Any], int]:
        out: list[Any] = []
        i = self._skip(i + 1)
        self._expect_more(i)
        if self.text[i] == "]":
            return out, i + 1
        while True:
            i = self._skip(i)
            self._expect_more(i)
            if self.text[i] == "]":
                self.repairs.append(f"removed a trailing comma before offset {i}")
                return out, i + 1
            item, i = self.value(i, f"{path}[{len(out)}]")
            out.append(item)
            i = self._skip(i)
            self._expect_more(i)
            if self.text[i] == ",":
                i += 1
                continue
            if self.text[i] == "]":
                return out, i + 1
            raise _JSONSyntaxError(f"expected ',' or ']' at offset {i}, found {self.text[i]!r}", i)


def find_json_object(text: str) -> ParsedJSON:
    """Find the first complete JSON object in ``text`` (text around it, e.g. code fences, is ignored).

    Raises:
        ValueError: no object could be decoded; the message says why (truncated output, no brace, bad syntax).
    """
    starts = [m.start() for m in re.finditer(r"\{", text)]
    if not starts:
        raise ValueError("the output contains no JSON object (no '{')")
    first_error: _JSONSyntaxError | None = None
    resume = 0
    for start in starts:
        if start < resume:
            continue  # this brace belongs to an object that already failed to parse
        parser = _Parser(text)
        try:
            value, end = parser.object(start, "")
        except _JSONSyntaxError as exc:
            first_error = first_error or exc
            if exc.truncated:
                break  # every later brace lies inside this unfinished object
            resume = exc.pos + 1
            continue
        repairs = parser.repairs
        if start > 0 and text[:start].strip():
            repairs = [*repairs, f"ignored {start} character(s) before the object"]
        if text[end:].strip():
            repairs = [*repairs, f"ignored {len(text) - end} character(s) after the object"]
        return ParsedJSON(value=value, spans=parser.spans, start=start, end=end, repairs=repairs)
    assert first_error is not None
    if first_error.truncated:
        raise ValueError(
            f"{first_error} (output length {len(text)} characters): the generation was probably cut off; "
            "raise max_new_tokens"
        )
    raise ValueError(f"the output is not valid JSON: {first_error}")


def field_confidence(
    spans: dict[str, tuple[int, int]], char_confidence: Sequence[float] | None, text_len: int
) -> dict[str, float]:
    """Per leaf path, the lowest per-character confidence over its value's characters (empty without scores)."""
    if not char_confidence or len(char_confidence) != text_len:
        return {}
    out: dict[str, float] = {}
    for path, (start, end) in spans.items():
        window = char_confidence[start:end] if end > start else char_confidence[max(start - 1, 0) : start + 1]
        if window:
            out[path] = float(min(1.0, max(0.0, min(window))))
    return out


def _field_path(loc: Sequence[int | str]) -> str:
    """Turn pydantic's ``("products", 2, "cases")`` -> ``"products[2].cases"`` (the paths confidence uses)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _validation_errors(exc: ValidationError) -> dict[str, str]:
    messages: dict[str, str] = {}
    for err in exc.errors():
        path = _field_path(err["loc"])
        got = err.get("input")
        got_text = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        message = f"{err['msg']}{got_text}"
        messages[path] = f"{messages[path]}; {message}" if path in messages else message
    return messages


def check_sums(data: dict[str, Any], spec: SchemaSpec) -> dict[str, str]:
    """Totals that disagree with what adds up to them; a mismatch is reported, never fixed.

    Two rules, both declared in the field tree (`invoice_vlm.schemas.fields.field_info`), so a user's schema gets
    them too:

    - ``sum_of``: a total equals the sum of a list column (``total_cases`` = the products' cases, ``subtotal`` = the
      line amounts);
    - ``adds_to``: a total equals the sum of the amounts that add to it (``total`` = ``subtotal`` + ``tax`` +
      shipping, minus a discount). When the first of them that sums a list column (the subtotal) is absent, the
      list column stands in for it: an invoice whose lines add up to 1,234.50 cannot print a total of 1,999.00 with
      no tax or other amount beside it.

    Only checked when every value involved is a number; either side may be the misread one, so nothing is changed.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> doc = {"products": [{"cases": "10"}, {"cases": "5"}], "total_cases": "16"}
        >>> check_sums(doc, get_schema("pallet_label"))
        {'total_cases': 'is 16 but the products add up to 15 (cases: 10 + 5)'}
        >>> check_sums({"subtotal": 100, "tax": 21, "total": 120}, get_schema("invoice"))
        {'total': 'is 120 but subtotal 100 + tax 21 add up to 121'}
    """
    errors: dict[str, str] = {}
    _check_node(spec.tree, data, "", errors)
    return errors


def _number(value: Any) -> Decimal | None:
    from invoice_vlm.normalize import normalize_amount

    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    return normalize_amount(value)[0] if isinstance(value, str) else None


def _column_sum(data: dict[str, Any], sum_of: str) -> tuple[Decimal, str] | None:
    """The sum of a list column of ``data`` and how it was added, or ``None`` when a value is not a number."""
    table, column = sum_of.rsplit(".", 1)
    items = data.get(table.rsplit(".", 1)[-1])
    if not isinstance(items, list) or not items:
        return None
    parts = [_number(item.get(column)) if isinstance(item, dict) else None for item in items]
    if any(p is None for p in parts):
        return None
    shown = " + ".join(str(item.get(column)) for item in items)
    return sum((p for p in parts if p is not None), Decimal(0)), f"{column}: {shown}"


UNREAD_SHARE = Decimal("0.30")
"""How much more than its read parts a total may be when some parts (a tax) were not read: no tax rate is higher."""


CASH_ROUNDING = Decimal("0.05")
"""The smallest coin a total may be rounded to (a receipt's "Rounding Adj" line): 5 cents, sen, rappen."""


def _cash_rounded(added: Decimal, total: Decimal) -> bool:
    """Whether ``total`` is ``added`` rounded to the nearest `CASH_ROUNDING` (``165.08`` paid as ``165.10``)."""
    step = CASH_ROUNDING
    return total % step == 0 and abs(added - total) <= step / 2


def _parts_mismatch(data: dict[str, Any], parts: list[Any], total: Decimal) -> str | None:
    """Why ``total`` cannot be the sum of its parts (``adds_to``), or ``None`` when it can or nothing can be said."""
    terms: list[tuple[str, Decimal]] = []
    unread: list[Any] = []
    for part in parts:
        value = _number(data.get(part.key))
        if value is None and data.get(part.key) is not None:
            return None  # a part that is not a number: nothing to check
        if value is None and part.sum_of and not terms:
            column = _column_sum(data, part.sum_of)  # the lines stand in for a missing subtotal
            if column is not None:
                terms.append((f"the {part.sum_of.rsplit('.', 1)[0]} ({column[1]})", column[0]))
                continue
        if value is None:
            unread.append(part)
            continue
        terms.append((part.key, part.sign * value))
    if not terms or (not any(p.sum_of for p in parts) and len(terms) < 2):
        return None  # no base to add to: a tax alone says nothing of the total
    added = sum((v for _, v in terms), Decimal(0))
    said = "".join(
        ("" if i == 0 else " - " if value < 0 else " + ") + f"{name} {_plain(abs(value) if i else value)}"
        for i, (name, value) in enumerate(terms)
    )
    said += f" {'add' if len(terms) > 1 else 'adds'} up to {_plain(added)}"
    if not unread:
        if abs(added - total) <= Decimal("0.005") or _cash_rounded(added, total):
            return None
        return f"is {_plain(total)} but {said}"
    # Some parts were not read (a tax): the total may exceed what was read, by no more than a tax could add.
    low = added if all(p.sign > 0 for p in unread) else None
    high = added * (1 + UNREAD_SHARE) if all(p.sign > 0 for p in unread) and added >= 0 else None
    if (low is not None and total < low - Decimal("0.005")) or (
        high is not None and total > high + Decimal("0.005")
    ):
        missing = " or ".join(p.key for p in unread)
        return f"is {_plain(total)} but {said}, and no {missing} printed beside it explains the difference"
    return None


def _check_node(node: Any, data: dict[str, Any], shown: str, errors: dict[str, str]) -> None:
    for leaf in node.fields:
        if leaf.many or leaf.key not in data:
            continue
        total = _number(data[leaf.key])
        if total is None:
            continue
        path = f"{shown}{leaf.key}"
        parts = [f for f in node.fields if f.adds_to == leaf.key and not f.many]
        if parts:
            message = _parts_mismatch(data, parts, total)
            if message:
                errors[path] = message
                continue
        if leaf.sum_of:
            column = _column_sum(data, leaf.sum_of)
            if column is not None and abs(column[0] - total) > Decimal("0.005"):
                table = leaf.sum_of.rsplit(".", 1)[0].rsplit(".", 1)[-1]
                errors[path] = (
                    f"is {data[leaf.key]} but the {table} add up to {_plain(column[0])} ({column[1]})"
                )
    for section in node.sections:
        sub = data.get(section.key)
        if isinstance(sub, dict):
            _check_node(section, sub, f"{shown}{section.key}.", errors)
    for table in node.tables:
        items = data.get(table.key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    _check_node(table, item, f"{shown}{table.key}[{i}].", errors)


def _plain(number: Decimal) -> str:
    return format(number.normalize(), "f") if number == number.to_integral_value() else format(number, "f")


def finish_document(
    value: dict[str, Any],
    schema: SchemaSpec,
    *,
    raw_text: str = "",
    source: str | None = None,
    confidence: dict[str, float] | None = None,
    errors: Sequence[str] = (),
    printed: Mapping[str, str] | None = None,
) -> Extraction:
    """Normalise a parsed document by field kind, check its totals, validate it: an `Extraction`, never raises.

    Any backend's output ends here, so every backend returns canonical values (ISO dates, numbers, ISO 4217
    currencies; see `invoice_vlm.normalize`) with the printed text kept in ``printed``; ``printed`` given here
    (text a backend saw for a field but did not take) is kept beside it.
    """
    from invoice_vlm.normalize import normalize_document

    normalized = normalize_document(value, schema)
    if printed:
        normalized.printed = {**printed, **normalized.printed}
    field_errors = dict(normalized.field_errors)
    for path, message in check_sums(normalized.data, schema).items():
        field_errors.setdefault(path, message)
    data = None
    try:
        data = schema.validate_data(normalized.data)
    except ValidationError as exc:
        for path, message in _validation_errors(exc).items():
            field_errors.setdefault(path, message)
    problems = [*errors, *(f"{path}: {message}" for path, message in field_errors.items())]
    if field_errors or errors:
        return Extraction(
            data=None,
            raw_text=raw_text,
            valid=False,
            errors=[f"does not match schema {schema.name!r}: {m}" for m in problems],
            confidence=confidence or {},
            source=source,
            partial=normalized.data,
            field_errors=field_errors,
            printed=normalized.printed,
        )
    return Extraction(
        data=data,
        raw_text=raw_text,
        valid=True,
        errors=[],
        confidence=confidence or {},
        source=source,
        printed=normalized.printed,
    )


def merge_pages(
    pages: Sequence[tuple[dict[str, Any], dict[str, float]]], schema: SchemaSpec
) -> tuple[dict[str, Any], dict[str, float]]:
    """One document from the pages of a multi-page file.

    Header fields come from the first page that prints them, totals (fields marked ``last_page``, e.g. ``total``)
    from the last, list items from every page in order.

    Args:
        pages: per page, the parsed object and its per-field confidence.
        schema: whose field tree says which fields are totals and which are lists.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> p1 = {"invoice_number": "7", "line_items": [{"description": "a", "amount": 1}], "total": None}
        >>> p2 = {"invoice_number": "7", "line_items": [{"description": "b", "amount": 2}], "total": 3}
        >>> merged, _ = merge_pages([(p1, {}), (p2, {"line_items[0].amount": 0.5})], get_schema("invoice"))
        >>> merged["line_items"], merged["total"]
        ([{'description': 'a', 'amount': 1}, {'description': 'b', 'amount': 2}], 3)
    """
    tree = schema.tree
    leaves = {f.key: f for f in tree.fields}
    tables = {t.key for t in tree.tables}
    merged: dict[str, Any] = {}
    confidence: dict[str, float] = {}
    for key in tree.order:
        order = list(reversed(pages)) if key in leaves and leaves[key].last_page else list(pages)
        if key in tables:
            items: list[Any] = []
            seen = False
            for value, conf in pages:
                page_items = value.get(key)
                if isinstance(page_items, list):
                    seen = True
                    offset = len(items)
                    for path, score in conf.items():
                        if path.startswith(f"{key}["):
                            index, rest = path[len(key) + 1 :].split("]", 1)
                            confidence[f"{key}[{int(index) + offset}]{rest}"] = score
                    items.extend(page_items)
            if seen:
                merged[key] = items
            continue
        for value, conf in order:
            if value.get(key) not in (None, "", {}, []):
                merged[key] = value[key]
                confidence.update({p: c for p, c in conf.items() if p == key or p.startswith(f"{key}.")})
                break
        else:
            if any(key in value for value, _ in pages):
                merged[key] = None
    return merged, confidence


def parse_output(
    text: str,
    schema: SchemaSpec,
    *,
    source: str | None = None,
    char_confidence: Sequence[float] | None = None,
) -> Extraction:
    """Turn a backend's text into an `Extraction` validated against ``schema``; never raises for bad text.

    Args:
        text: the backend's output, kept verbatim in ``raw_text``.
        schema: what a valid result must satisfy.
        source: where the document came from.
        char_confidence: one score in ``[0, 1]`` per character of ``text``; a field's confidence is the lowest
            score among its value's characters.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> result = parse_output('{"invoice_number": "F-7", "invoice_date": "05 Juillet 2015"}', get_schema("invoice"))
        >>> result.valid, result.field_errors, result.partial["invoice_date"]
        (False, {'total': 'Field required'}, '2015-07-05')
    """
    try:
        value, confidence = read_output(text, char_confidence)
    except ValueError as exc:
        return Extraction.from_error(str(exc), source=source, raw_text=text, unreadable=False)
    return finish_document(value, schema, raw_text=text, source=source, confidence=confidence)


def read_output(
    text: str, char_confidence: Sequence[float] | None = None
) -> tuple[dict[str, Any], dict[str, float]]:
    """The JSON object in a backend's text and its per-field confidence, before normalisation and validation.

    Raises:
        ValueError: no object could be decoded (see `find_json_object`).
    """
    found = find_json_object(text)
    return found.value, field_confidence(found.spans, char_confidence, len(text))
