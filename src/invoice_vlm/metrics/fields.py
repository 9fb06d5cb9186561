"""Field-level accuracy: which fields came back right, so one wrong digit in a shipment id shows.

Normalisation before comparing (`normalize_value`): strings are stripped and runs of whitespace become one space;
case and punctuation are kept (``P2481`` and ``p2481`` are different ids). Where the schema types a field as a number
(or when both sides are JSON numbers) values compare as numbers, so ``12.5``, ``12.50`` and ``"1,012.50"`` vs
``1012.5`` agree; dates and currencies compare in their canonical form (`invoice_vlm.normalize`). ``None``, a missing key and an empty string are the same "no value".

List items (products, line items) are matched to the reference's items by the assignment that maximizes the
number of equal leaf fields (Hungarian algorithm), not by position: a missing first row costs that row only.
Reference items left unmatched count as missing fields; predicted items left over count as invented fields, and
so do keys the reference does not have. Accuracy is ``correct / (reference leaves + invented leaves)``.
"""

from __future__ import annotations

import functools
import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from invoice_vlm._text import as_number, levenshtein
from invoice_vlm.errors import InputError
from invoice_vlm.schemas import LeafField, SchemaSpec, resolve_schema

__all__ = [
    "FieldError",
    "as_number",
    "assignment",
    "character_error_rate",
    "field_accuracy",
    "levenshtein",
    "normalize_value",
    "pair_documents",
    "validity_rates",
]

_MISSING: Any = object()
_WS = re.compile(r"\s+")


@dataclass(frozen=True)
class FieldError:
    """One field that did not come back right."""

    document: int
    field: str
    kind: str  # "wrong", "missing" or "invented"
    expected: Any
    got: Any

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON reports."""
        return {
            "document": self.document,
            "field": self.field,
            "kind": self.kind,
            "expected": self.expected,
            "got": self.got,
        }


def normalize_value(value: Any, numeric: bool = False) -> Any:
    """The form two leaf values are compared in (see the module docstring)."""
    if value is _MISSING or value is None:
        return None
    if numeric or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        number = as_number(value)
        if number is not None:
            return round(number, 6)
    if isinstance(value, str):
        text = _WS.sub(" ", value).strip()
        return text or None
    return value


def assignment(score: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
    """Pairs (row, column) maximizing the total score, each row and column used at most once (Hungarian method)."""
    rows = len(score)
    cols = len(score[0]) if rows else 0
    if not rows or not cols:
        return []
    n = max(rows, cols)
    top = max(max(r) for r in score)
    cost = [[(top - score[i][j]) if i < rows and j < cols else top for j in range(n)] for i in range(n)]
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (n + 1)
    p, way = [0] * (n + 1), [0] * (n + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (n + 1)
        used = [False] * (n + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, n + 1):
                if not used[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(n + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    return sorted((p[j] - 1, j - 1) for j in range(1, n + 1) if p[j] and p[j] - 1 < rows and j - 1 < cols)


class _Scorer:
    def __init__(self, leaves: dict[str, LeafField]) -> None:
        self.leaves = leaves
        self.correct: dict[str, int] = defaultdict(int)
        self.total: dict[str, int] = defaultdict(int)
        self.errors: list[FieldError] = []
        self.char_edits = 0
        self.char_total = 0

    def leaf(self, doc: int, path: str, shown: str, pred: Any, ref: Any) -> None:
        leaf = self.leaves.get(path)
        numeric = leaf is not None and leaf.numeric
        if leaf is not None and leaf.kind in ("date", "currency", "integer", "decimal"):
            pred, ref = _canonical(pred, leaf), _canonical(ref, leaf)
        p, r = normalize_value(pred, numeric), normalize_value(ref, numeric)
        self.total[path] += 1
        ref_text = "" if r is None else str(r)
        pred_text = "" if p is None else str(p)
        self.char_total += len(ref_text)
        self.char_edits += levenshtein(pred_text, ref_text)
        if p == r:
            self.correct[path] += 1
            return
        kind = "missing" if (pred is _MISSING or p is None) else "wrong"
        self.errors.append(FieldError(doc, shown, kind, ref, None if pred is _MISSING else pred))

    def invented(self, doc: int, path: str, shown: str, value: Any) -> None:
        for sub_path, sub_shown, leaf_value in _leaves(value, path, shown):
            if normalize_value(leaf_value) is None:
                continue  # an explicit null where the reference has no key is not an invention
            self.total[sub_path] += 1
            self.char_edits += len(str(leaf_value))
            self.errors.append(FieldError(doc, sub_shown, "invented", None, leaf_value))

    def match_score(self, pred: Any, ref: Any, path: str) -> float:
        probe = _Scorer(self.leaves)
        probe.compare(0, pred, ref, path, path)
        return float(sum(probe.correct.values())) - 0.001 * probe.char_edits

    def compare(self, doc: int, pred: Any, ref: Any, path: str, shown: str) -> None:
        if isinstance(ref, dict):
            pred_dict = pred if isinstance(pred, dict) else {}
            for key, value in ref.items():
                self.compare(doc, pred_dict.get(key, _MISSING), value, _join(path, key), _join(shown, key))
            for key, value in pred_dict.items():
                if key not in ref:
                    self.invented(doc, _join(path, key), _join(shown, key), value)
            return
        if isinstance(ref, list):
            pred_list = pred if isinstance(pred, list) else []
            scores = [[self.match_score(p, r, path) for p in pred_list] for r in ref]
            pairs = dict(assignment(scores)) if pred_list else {}
            for i, item in enumerate(ref):
                got = pred_list[pairs[i]] if i in pairs else _MISSING
                self.compare(doc, got, item, path, f"{shown}[{i}]")
            matched = set(pairs.values())
            for j, item in enumerate(pred_list):
                if j not in matched:
                    self.invented(doc, path, f"{shown}[+{j}]", item)
            return
        self.leaf(doc, path, shown, pred, ref)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _leaves(value: Any, path: str, shown: str) -> list[tuple[str, str, Any]]:
    if isinstance(value, dict):
        out = []
        for key, sub in value.items():
            out.extend(_leaves(sub, _join(path, key), _join(shown, key)))
        return out
    if isinstance(value, list):
        out = []
        for i, sub in enumerate(value):
            out.extend(_leaves(sub, path, f"{shown}[{i}]"))
        return out
    return [(path, shown, value)]


def _as_document(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


def pair_documents(predictions: Sequence[Any], references: Sequence[Any]) -> list[tuple[Any, Any]]:
    """Predictions and references as (dict or ``None``, dict) pairs; raises ``ValueError`` when they do not pair up."""
    if len(predictions) != len(references):
        raise InputError(
            f"{len(predictions)} predictions but {len(references)} references; they must pair up."
        )
    if not references:
        raise InputError("No documents to score.")
    pairs = []
    for i, (p, r) in enumerate(zip(predictions, references, strict=True)):
        ref = _as_document(r)
        if not isinstance(ref, dict):
            raise InputError(f"references[{i}] is not a JSON object: {str(r)[:80]!r}")
        pred = _as_document(p)
        pairs.append((pred if isinstance(pred, dict) else None, ref))
    return pairs


def field_accuracy(
    predictions: Sequence[Any], references: Sequence[Any], schema: str | SchemaSpec | None = None
) -> dict[str, Any]:
    """Field-level accuracy over parsed documents.

    Args:
        predictions: per document a dict, a pydantic model, a JSON string, or ``None`` (nothing usable came back:
            every field counts as missing).
        references: the true documents, in the same order.
        schema: types numbers as numbers (see the module docstring); without it only JSON numbers are.

    Returns:
        ``field_accuracy`` (micro over all reference leaves plus invented ones), ``document_accuracy`` (share of
        documents with every field right and nothing invented), ``per_field`` (path without indices, e.g.
        ``products.cases`` -> accuracy), counts ``num_documents``, ``num_fields``, ``correct``, ``wrong``,
        ``missing``, ``invented``, the values' ``character_error_rate``, and ``errors`` (one dict per field that was not right: document, field,
        kind, expected, got).

    Examples:
        >>> field_accuracy([{"id": "P1", "n": "2"}], [{"id": "P7", "n": "2"}])["per_field"]
        {'id': 0.0, 'n': 1.0}
    """
    scorer = _Scorer(_leaf_fields(schema))
    perfect = 0
    for doc, (pred, ref) in enumerate(pair_documents(predictions, references)):
        before = len(scorer.errors)
        scorer.compare(doc, pred if pred is not None else {}, ref, "", "")
        perfect += len(scorer.errors) == before
    kinds: dict[str, int] = defaultdict(int)
    for err in scorer.errors:
        kinds[err.kind] += 1
    total = sum(scorer.total.values())
    correct = sum(scorer.correct.values())
    n = len(references)
    return {
        "field_accuracy": correct / total if total else 1.0,
        "document_accuracy": perfect / n,
        "per_field": {path: scorer.correct[path] / scorer.total[path] for path in scorer.total},
        "num_documents": n,
        "num_fields": total,
        "correct": correct,
        "wrong": kinds["wrong"],
        "missing": kinds["missing"],
        "invented": kinds["invented"],
        "character_error_rate": scorer.char_edits / scorer.char_total if scorer.char_total else 0.0,
        "errors": [e.as_dict() for e in scorer.errors],
    }


def _leaf_fields(schema: str | SchemaSpec | None) -> dict[str, LeafField]:
    if schema is None:
        return {}
    return {leaf.path: leaf for leaf in resolve_schema(schema).leaf_fields}


def _canonical(value: Any, leaf: LeafField) -> Any:
    """A printed date, currency or number in canonical form (``"05/07/2015"`` and ``"2015-07-05"`` agree)."""
    if value is _MISSING or not isinstance(value, str):
        return value
    return _canonical_text(value, leaf.kind, leaf.json_type)


@functools.lru_cache(maxsize=4096)
def _canonical_text(value: str, kind: str, json_type: str) -> Any:
    """Cached: list items are compared pairwise while matching, so the same value is read many times."""
    from invoice_vlm.normalize import normalize_value as normalize_kind

    found = normalize_kind(value, kind, json_type=json_type)
    return value if found.error else found.value


def character_error_rate(
    predictions: Sequence[Any], references: Sequence[Any], schema: str | SchemaSpec | None = None
) -> float:
    """Character error rate over leaf values: edits to turn each value into the reference's / reference characters.

    Values are paired as in `field_accuracy` (list items by best assignment), which reports the same number as
    ``character_error_rate``; invented values add their length.

    Examples:
        >>> character_error_rate([{"id": "P1234"}], [{"id": "P1284"}])
        0.2
    """
    rate: float = field_accuracy(predictions, references, schema)["character_error_rate"]
    return rate


def validity_rates(raw_texts: Sequence[str], schema: str | SchemaSpec) -> dict[str, float]:
    """Share of outputs holding a JSON object, and share that also validate against ``schema``.

    Examples:
        >>> validity_rates(['{"a": 1}', "oops"], "invoice")
        {'json_valid_rate': 0.5, 'schema_valid_rate': 0.0}
    """
    from pydantic import ValidationError

    from invoice_vlm.parsing import find_json_object

    spec = resolve_schema(schema)
    if not raw_texts:
        raise InputError("No outputs to rate.")
    json_ok = schema_ok = 0
    for text in raw_texts:
        try:
            found = find_json_object(text)
        except ValueError:
            continue
        json_ok += 1
        try:
            spec.validate_data(found.value)
        except ValidationError:
            continue
        schema_ok += 1
    return {"json_valid_rate": json_ok / len(raw_texts), "schema_valid_rate": schema_ok / len(raw_texts)}
