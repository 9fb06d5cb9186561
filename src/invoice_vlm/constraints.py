r"""What a constrained decoder may write for a schema: a bounded JSON schema, and the longest output it allows.

`generation_schema` turns a schema's pydantic JSON schema into the one a grammar engine (xgrammar, vLLM's structured
outputs) compiles: references inlined, keys in the schema's declared order (the order `SchemaSpec.dumps` writes
training targets in, so a model is never forced into an order it was not trained on), no keys outside the schema,
and every string, list and number bounded, so the grammar is finite. Strings get a pattern that excludes the
characters JSON forbids raw in a string (control characters) and the two it would need escapes for (``"`` and
``\``); their length is the field's ``max_length`` or `DEFAULT_MAX_LENGTH`. Lists get ``max_items`` or
`DEFAULT_MAX_ITEMS`; numbers stay within ±`NUMBER_LIMIT`.

`output_bound` is the largest number of UTF-8 bytes a conforming output can have, written with `SEPARATORS`. Every
token a model emits (bar the end-of-sequence token) is at least one byte, so a constrained output always closes
within ``max_new_tokens`` when ``max_new_tokens >= output_bound(...)``; a shorter budget can still cut off a model
that drifts, and that is reported as a cut-off (never completed by guessing).

Examples:
    >>> from invoice_vlm import get_schema
    >>> properties = generation_schema(get_schema("invoice")).get("properties")
    >>> print(*list(properties)[:3])
    invoice_number invoice_date due_date
    >>> import re
    >>> iso = properties.get("invoice_date").get("pattern")  # the date forms its declared pattern keeps: ISO
    >>> [bool(re.fullmatch(iso, d)) for d in ("2024-02-29", "2023-02-29", "2024-13-01", "29/02/2024")]
    [True, False, False, False]
"""

from __future__ import annotations

import copy
import importlib.util
import itertools
import json
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from invoice_vlm.errors import ConfigError
from invoice_vlm.schemas.fields import LeafField, build_tree, kind_pattern, pattern_width

if TYPE_CHECKING:
    from invoice_vlm.schemas import SchemaSpec

__all__ = [
    "DEFAULT_MAX_ITEMS",
    "DEFAULT_MAX_LENGTH",
    "NUMBER_LIMIT",
    "SEPARATORS",
    "generation_schema",
    "grammar_available",
    "json_grammar",
    "lift_text_bounds",
    "output_bound",
    "target_mismatch",
]

DEFAULT_MAX_LENGTH = 256
"""Characters allowed in a string field that declares no ``max_length``."""
DEFAULT_MAX_ITEMS = 64
"""Items allowed in a list field that declares no ``max_length``."""
NUMBER_LIMIT = 10**12
"""Numbers without declared bounds stay strictly inside ±this (a trillion covers any invoice amount)."""
SEPARATORS = (", ", ": ")
"""Item and key separators, as ``json.dumps`` (and so `SchemaSpec.dumps`) writes them."""
FRACTION_DIGITS = 6  # what xgrammar allows after the point in a bounded number
STRING_CHARS = (  # any character JSON allows raw in a string, but quote and backslash, as positive ranges:
    # a negated class let byte-fallback tokens spell bytes that are no UTF-8 character at all
    # (lone continuation bytes), each decoded as U+FFFD, so a string never closed within the output bound; and no
    # surrogate (byte tokens can spell one; it decodes to three U+FFFD, over the length).
    "[ !#-\\[\\]-~\\u007f-\\ud7ff\\ue000-\\uffff\U00010000-\U0010ffff]"  # the astral planes as the characters themselves
)


EDGE_CHARS = (  # the same, and no white space (what Python's \s matches): a value's first and last character
    "[!#-\\[\\]-~\\u007f-\\u0084\\u0086-\\u009f\\u00a1-\\u167f\\u1681-\\u1fff\\u200b-\\u2027\\u202a-\\u202e"
    "\\u2030-\\u205e\\u2060-\\u2fff\\u3001-\\ud7ff\\ue000-\\uffff\U00010000-\U0010ffff]"
)


def _text_pattern(low: int, high: int | None) -> str:
    """Text of ``low`` to ``high`` characters (no upper bound: ``None``) that normalisation keeps as it is.

    At least one character, and no white space at either end: normalisation collapses white space, and text of
    spaces alone is no value.
    """
    if high is not None and high <= 1:
        return f"^{EDGE_CHARS}$"
    inner_low = max(low - 2, 0)
    if high is not None:
        repeat = f"{{{inner_low},{high - 2}}}"
    else:  # what xgrammar masks fastest
        repeat = "*" if inner_low == 0 else f"{{{inner_low},}}"
    return f"^{EDGE_CHARS}({STRING_CHARS}{repeat}{EDGE_CHARS}){'?' if low <= 1 else ''}$"


_TEXT_FORM = re.compile(  # what _text_pattern writes for two characters or more
    re.escape(f"^{EDGE_CHARS}({STRING_CHARS}") + r"\{(\d+),(\d+)\}" + re.escape(f"{EDGE_CHARS})") + r"(\??)\$"
)


def lift_text_bounds(json_schema: Any) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """``json_schema`` (bounded) with every text field's length bound lifted, and those bounds by field path.

    xgrammar fills a token mask inside a counted repetition (``{0,254}``) several times slower than inside an
    unbounded one (``*``), and the difference grows with the characters already written: the bounded grammar is
    what a constrained decoder must keep, the lifted one is what it can fill masks from while no token can reach
    a bound (the two then allow the same tokens). A path is the field's keys, with ``"[]"`` for a list's items:
    ``("line_items", "[]", "description")``; the bound is in characters.

    Examples:
        >>> from pydantic import BaseModel, Field
        >>> from invoice_vlm import SchemaSpec
        >>> class Note(BaseModel):
        ...     text: str = Field(max_length=20)
        ...     tags: list[str] = Field(max_length=3)
        >>> note = SchemaSpec(name="note", model=Note, prompt="extract note in JSON format")
        >>> lifted, bounds = lift_text_bounds(generation_schema(note))
        >>> bounds
        {('text',): 20, ('tags', '[]'): 256}
        >>> "{" in lifted["properties"]["text"]["pattern"], lifted["properties"]["tags"]["maxItems"]
        (False, 3)
    """
    bounds: dict[tuple[str, ...], int] = {}

    def lift(node: Any, path: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node
        out = dict(node)
        form = _TEXT_FORM.fullmatch(str(out.get("pattern", ""))) if out.get("type") == "string" else None
        if form is not None:
            inner_low, high = int(form[1]), int(form[2]) + 2
            bounds[path] = min(bounds.get(path, high), high)
            out["pattern"] = _text_pattern(1 if form[3] else inner_low + 2, None)
        for key in ("anyOf", "oneOf"):
            if key in out:
                out[key] = [lift(branch, path) for branch in out[key]]
        if "items" in out:
            out["items"] = lift(out["items"], (*path, "[]"))
        if "properties" in out:
            out["properties"] = {k: lift(v, (*path, k)) for k, v in out["properties"].items()}
        return out

    return lift(json_schema, ()), bounds


def grammar_available() -> bool:
    """Whether xgrammar (the ``constrained`` extra) is installed, so decoding can be constrained."""
    return importlib.util.find_spec("xgrammar") is not None


def json_grammar(json_schema: Any) -> Any:
    """The xgrammar grammar every backend constrains decoding with.

    ``json_schema`` written the way training targets are: `SEPARATORS`, no free whitespace, no keys beyond the
    schema's.
    """
    import xgrammar

    return xgrammar.Grammar.from_json_schema(
        json.dumps(json_schema), any_whitespace=False, separators=SEPARATORS, strict_mode=True
    )


class _Unbounded(ValueError):
    pass


def _resolve(node: Any, defs: dict[str, Any], where: str, seen: tuple[str, ...] = ()) -> Any:
    if isinstance(node, list):
        return [_resolve(n, defs, where, seen) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = str(node["$ref"]).rsplit("/", 1)[-1]
        if name in seen:
            raise _Unbounded(f"{where}: {name} refers to itself, so its outputs have no length bound")
        if name not in defs:
            raise _Unbounded(f"{where}: unknown reference {node['$ref']!r}")
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return {**_resolve(copy.deepcopy(defs[name]), defs, where, (*seen, name)), **rest}
    return {k: _resolve(v, defs, where, seen) for k, v in node.items() if k != "$defs"}


def _pattern_width(pattern: str, where: str) -> int:
    try:
        widest = pattern_width(pattern)
    except re.error as exc:
        raise _Unbounded(f"{where}: pattern {pattern!r} does not compile ({exc})") from None
    if widest >= 1 << 16:
        raise _Unbounded(
            f"{where}: pattern {pattern!r} matches strings of any length; give it a bounded quantifier such as "
            "{1,40}"
        )
    return widest


_KEYWORDS = frozenset(
    {"type", "properties", "required", "items", "anyOf", "oneOf", "enum", "const", "pattern", "minimum", "maximum",
     "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "additionalProperties"}
)  # fmt: skip


def _keywords(node: Any) -> Any:
    """Only what constrains output (titles, descriptions, labels and defaults are not the grammar's business)."""
    if isinstance(node, list):
        return [_keywords(n) for n in node]
    if not isinstance(node, dict):
        return node
    if "properties" in node:
        node = {**node, "properties": {k: _keywords(v) for k, v in node["properties"].items()}}
    return {k: (v if k == "properties" else _keywords(v)) for k, v in node.items() if k in _KEYWORDS}


def _bound(node: Any, where: str, leaves: dict[str, LeafField]) -> Any:
    """The node with every string, list and number bounded (a new dict); strings of a field kind get its forms."""
    if not isinstance(node, dict):
        return node
    out = dict(node)
    leaf = leaves.get(where.replace("[]", ""))
    if leaf is not None and "anyOf" in out:
        # Decimal: pydantic reads a number or a numeric string and writes a string; the grammar writes what the
        # field tree says the value is written as.
        kept = [b for b in out["anyOf"] if b.get("type") in (leaf.json_type, "null") or "type" not in b]
        out["anyOf"] = kept or out["anyOf"]
    for key in ("anyOf", "oneOf"):
        if key in out:
            out[key] = [_bound(n, f"{where}", leaves) for n in out[key]]
    if "allOf" in out:
        raise _Unbounded(f"{where}: allOf is not supported by constrained decoding")
    kind = out.get("type")
    if isinstance(kind, list):
        raise _Unbounded(f"{where}: a field of several types {kind} (write it as Optional/Union instead)")
    if kind is None and not ({"anyOf", "oneOf", "enum", "const"} & set(out)):
        raise _Unbounded(f"{where}: the field has no type (Any), so nothing bounds what may be written")
    if kind == "string" and "enum" not in out and "const" not in out:
        try:
            forms = kind_pattern(leaf) if leaf is not None else None
        except ValueError as exc:
            raise _Unbounded(str(exc)) from None
        if forms is not None:
            out.pop("minLength", None), out.pop("maxLength", None)
            out["pattern"] = forms  # exactly what normalisation reads for the field's kind
        if "pattern" in out:
            _pattern_width(str(out["pattern"]), where)
        else:
            low = int(out.pop("minLength", 0))
            high = int(out.pop("maxLength", DEFAULT_MAX_LENGTH))
            out["pattern"] = _text_pattern(low, high)
        out.pop("format", None)  # a format would replace the pattern in the grammar
    elif kind in ("number", "integer"):
        if "minimum" not in out and "exclusiveMinimum" not in out:
            out["minimum"] = -NUMBER_LIMIT if kind == "integer" else -NUMBER_LIMIT + 1
        if "maximum" not in out and "exclusiveMaximum" not in out:
            out["maximum"] = NUMBER_LIMIT if kind == "integer" else NUMBER_LIMIT - 1
    elif kind == "array":
        out.setdefault("maxItems", DEFAULT_MAX_ITEMS)
        if "prefixItems" in out:
            raise _Unbounded(f"{where}: tuples (prefixItems) are not supported by constrained decoding")
        out["items"] = _bound(out.get("items", {}), f"{where}[]", leaves)
    elif kind == "object":
        properties = out.get("properties") or {}
        out["properties"] = {
            k: _bound(v, f"{where}.{k}" if where else k, leaves) for k, v in properties.items()
        }
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=64)
def _cached(model: type, text: str) -> str:
    raw = json.loads(text)
    name = getattr(model, "__name__", "schema")
    leaves = {leaf.path: leaf for leaf in build_tree(model).leaves}
    try:
        resolved = _resolve(raw, raw.get("$defs", {}), "")
        bounded = _bound(resolved, "", leaves)
    except _Unbounded as exc:
        raise ConfigError(
            f"schema model {name} cannot be decoded under constraints: {exc}; bound the field (max_length=..., "
            "a bounded pattern) or pass constrained=False (--no-constrained).",
            key="constrained",
        ) from None
    bounded = _keywords(bounded)
    output_bound(bounded)  # fails here, once, for a node it cannot measure
    return json.dumps(bounded, ensure_ascii=False)


def generation_schema(spec: SchemaSpec) -> dict[str, Any]:
    """The bounded JSON schema a constrained decoder compiles for ``spec`` (see the module's description).

    Raises:
        ConfigError: a field cannot be bounded (``Any``, a self-referencing model, an unbounded pattern).
    """
    return json.loads(_cached(spec.model, json.dumps(spec.json_schema(), sort_keys=False)))  # type: ignore[no-any-return]


def _number_width(node: dict[str, Any]) -> int:
    limits = [
        abs(float(node[k]))
        for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if k in node
    ]
    digits = len(str(int(max(limits)))) if limits else len(str(NUMBER_LIMIT))
    fraction = 0 if node.get("type") == "integer" else 1 + FRACTION_DIGITS
    return 1 + digits + fraction  # sign, integer digits, point and fraction


def output_bound(node: dict[str, Any]) -> int:
    """The most UTF-8 bytes a value conforming to the bounded schema ``node`` can take, written with `SEPARATORS`.

    Examples:
        >>> output_bound({"type": "object", "properties": {"a": {"type": "string", "pattern": "^[A-Z]{3}$"}}})
        23
    """
    if "const" in node:
        return len(json.dumps(node["const"], ensure_ascii=False).encode())
    if "enum" in node:
        return max(len(json.dumps(v, ensure_ascii=False).encode()) for v in node["enum"])
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        return max(output_bound(b) for b in branches)
    kind = node.get("type")
    if kind == "string":
        return 2 + 4 * _pattern_width(
            str(node["pattern"]), "string"
        )  # quotes, then up to 4 bytes a character
    if kind in ("number", "integer"):
        return _number_width(node)
    if kind == "boolean":
        return len("false")
    if kind == "null":
        return len("null")
    if kind == "array":
        items = output_bound(node.get("items", {}))
        return 2 + int(node["maxItems"]) * (items + len(SEPARATORS[0]))
    if kind == "object":
        total = 2
        for key, child in (node.get("properties") or {}).items():
            total += len(json.dumps(key, ensure_ascii=False).encode()) + len(SEPARATORS[1])
            total += output_bound(child) + len(SEPARATORS[0])
        return total
    raise ValueError(f"cannot measure a schema node of type {kind!r}")


def target_mismatch(text: str, spec: SchemaSpec) -> str | None:
    """Why constrained decoding could not write training target ``text`` as it is, or ``None`` when it could.

    A model must never be forced into a form it was not trained on: targets written by `SchemaSpec.dumps` (keys
    in schema order, ``json.dumps`` spacing) fit; indented JSON, another key order, exponents or values past a
    bound do not, and fine-tuning then saves ``constrained: false``.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> spec = get_schema("invoice")
        >>> target_mismatch('{"invoice_number": "7", "invoice_date": "2024-01-31", "total": 3.5}', spec) is None
        True
        >>> target_mismatch('{"total": 3.5, "invoice_number": "7", "invoice_date": "2024-01-31"}', spec)
        "key 'invoice_number' comes after 'total', not in the schema's order"
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"it is not JSON ({exc.msg})"
    if json.dumps(value, ensure_ascii=False) != text:
        return "it is not written as json.dumps writes it (', ' and ': ' separators, one line, characters unescaped)"
    return _mismatch(value, generation_schema(spec), "")


def _mismatch(value: Any, node: dict[str, Any], path: str) -> str | None:
    branches = node.get("anyOf") or node.get("oneOf")
    if branches:
        reasons = [_mismatch(value, b, path) for b in branches]
        return None if any(r is None for r in reasons) else next(r for r in reasons if r)
    kind = node.get("type")
    where = path or "the document"
    if kind == "object" and isinstance(value, dict):
        order = list(node.get("properties") or {})
        position = [order.index(k) if k in order else -1 for k in value]
        for key, place in zip(value, position, strict=True):
            if place < 0:
                return f"key {key!r} is not in the schema"
        for (a, pa), (b, pb) in itertools.pairwise(zip(value, position, strict=True)):
            if pb < pa:
                return f"key {b!r} comes after {a!r}, not in the schema's order"
        for key, child in value.items():
            reason = _mismatch(child, node["properties"][key], f"{path}.{key}" if path else key)
            if reason:
                return reason
        return None
    if kind == "array" and isinstance(value, list):
        if len(value) > int(node["maxItems"]):
            return f"{where} has {len(value)} items, more than its bound of {node['maxItems']}"
        for i, item in enumerate(value):
            reason = _mismatch(item, node.get("items", {}), f"{path}[{i}]")
            if reason:
                return reason
        return None
    if kind == "string" and isinstance(value, str):
        if "pattern" in node and not re.fullmatch(
            str(node["pattern"]).removeprefix("^").removesuffix("$"), value
        ):
            return f"{where}: {value!r} does not fit {node['pattern']!r} (too long, or a quote or backslash in it)"
        return None
    if kind in ("number", "integer") and isinstance(value, (int, float)) and not isinstance(value, bool):
        written = json.dumps(value)
        if "e" in written.lower() or len(written.partition(".")[2]) > FRACTION_DIGITS:
            return f"{where}: {written} has an exponent or more than {FRACTION_DIGITS} decimals"
        return None
    if kind == "boolean" and isinstance(value, bool):
        return None
    if kind == "null" and value is None:
        return None
    if "enum" in node or "const" in node:
        allowed = node.get("enum", [node.get("const")])
        return None if value in allowed else f"{where}: {value!r} is not one of {allowed!r}"
    return f"{where}: {json.dumps(value, ensure_ascii=False)[:40]} is not a {kind}"
