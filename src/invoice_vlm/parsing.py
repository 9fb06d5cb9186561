"""From model text to a validated `Extraction`: find the JSON object, repair what is safe, validate.

Only repairs that cannot change a value are made (code fences and text around the object, trailing commas). An
output cut off before its object closes is *not* completed: guessing the end of a truncated shipment id would give
wrong data that looks valid, so it is reported with advice to raise ``max_new_tokens``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]  # public but missing from typeshed
from typing import Any

from pydantic import ValidationError

from invoice_vlm.extraction import Extraction
from invoice_vlm.schemas import SchemaSpec

__all__ = ["ParsedJSON", "find_json_object", "parse_output"]

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


def _confidence(
    spans: dict[str, tuple[int, int]], char_confidence: Sequence[float] | None, text_len: int
) -> dict[str, float]:
    if not char_confidence or len(char_confidence) != text_len:
        return {}
    out: dict[str, float] = {}
    for path, (start, end) in spans.items():
        window = char_confidence[start:end] if end > start else char_confidence[max(start - 1, 0) : start + 1]
        if window:
            out[path] = float(min(1.0, max(0.0, min(window))))
    return out


def _format_validation_error(exc: ValidationError) -> list[str]:
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = err.get("input")
        got_text = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        messages.append(f"{loc}: {err['msg']}{got_text}")
    return messages


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

    Example:
        >>> from invoice_vlm import get_schema
        >>> parse_output('{"a": 1}', get_schema("pallet_label")).valid
        False
    """
    try:
        found = find_json_object(text)
    except ValueError as exc:
        return Extraction.failed(str(exc), source=source, raw_text=text)
    confidence = _confidence(found.spans, char_confidence, len(text))
    try:
        data = schema.validate_data(found.value)
    except ValidationError as exc:
        return Extraction(
            data=None,
            raw_text=text,
            valid=False,
            errors=[f"does not match schema {schema.name!r}: {m}" for m in _format_validation_error(exc)],
            confidence=confidence,
            source=source,
        )
    return Extraction(data=data, raw_text=text, valid=True, errors=[], confidence=confidence, source=source)
