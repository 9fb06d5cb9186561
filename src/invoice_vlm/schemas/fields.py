"""One field tree per schema, built once from its pydantic model and read by everything that walks a schema.

The OCR reader, normalisation, the metrics, the synthetic generator and the test helpers all read this tree, so
they agree on what each field is: its path, its JSON type, its *kind* (what the printed text means), the words that
label it on paper, whether it is a total of a table column, and where its values may go wrong.

A field's kind is declared on the schema with `field_info` (or inferred from the annotation when not declared):

=========== ============================================ ======================================================
kind        canonical form                               printed forms it accepts
=========== ============================================ ======================================================
``text``    whitespace collapsed                         anything
``code``    whitespace collapsed (ids, routes, numbers   anything; OCR's O/0, l/1, S/5 mended inside digit
            kept as printed)                             runs by the offline reader
``integer`` an integer (or its digits, for a str field)  ``1,200`` ``1.200`` ``1 200`` ``12 pcs``
``decimal`` a number (``float``) or its digits           ``€ 4.904,94`` ``1,012.50`` ``-12,5`` ``CHF 1'234.50``
``date``    ISO ``yyyy-mm-dd``                           ``August 3, 2014`` ``20-10-2015`` ``05 Juillet 2015``
``currency`` ISO 4217 code                               ``€`` ``$`` ``₹`` ``EUR`` ``euro``
``boolean`` ``true``/``false``                           ``yes`` ``no`` ``ja`` ``oui`` ``x``
=========== ============================================ ======================================================

Example:
    >>> from pydantic import BaseModel, Field
    >>> class Receipt(BaseModel):
    ...     number: str = Field(json_schema_extra=field_info("Receipt No.", "Bon", kind="code"))
    ...     total: float
    >>> {leaf.path: leaf.kind for leaf in build_tree(Receipt).leaves}
    {'number': 'code', 'total': 'decimal'}
"""

from __future__ import annotations

import datetime
import decimal
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args

from pydantic import BaseModel
from pydantic.config import JsonDict

__all__ = [
    "FIELD_KINDS",
    "FOOTER_LABELS",
    "FieldKind",
    "JsonType",
    "LeafField",
    "ObjectNode",
    "build_tree",
    "field_info",
    "field_labels",
    "unwrap_optional",
]

FieldKind = Literal["text", "code", "integer", "decimal", "date", "currency", "boolean"]
FIELD_KINDS: tuple[str, ...] = get_args(FieldKind)
JsonType = Literal["string", "integer", "number", "boolean"]

FOOTER_LABELS: tuple[str, ...] = (
    "total",
    "totals",
    "grand total",
    "sum",
    "sums",
    "summe",
    "gesamt",
    "gesamtsumme",
    "totaal",
    "totalen",
    "total ttc",
    "totaux",
    "totale",
    "suma",
)
"""Words that start a table's footer row, in the languages the built-in schemas read. A table may add its own."""


def field_info(
    *labels: str,
    kind: FieldKind | None = None,
    sum_of: str | None = None,
    last_page: bool = False,
    ocr_pattern: str | None = None,
    footer_labels: tuple[str, ...] = (),
) -> JsonDict:
    """``json_schema_extra`` that tells invoice_vlm what a field is and how it is printed.

    Args:
        *labels: words that label the field on paper, in any language (``"Invoice No."``, ``"Rechnungsnummer"``).
        kind: what the value means (see the module table); inferred from the annotation when omitted.
        sum_of: for a total, the list column it adds up (``"products.cases"``); a mismatch is a field error.
        last_page: on a multi-page document, take this field from the last page that prints it (totals).
        ocr_pattern: a regular expression the value matches, used to repair OCR's spacing slips.
        footer_labels: for a list field, extra words that start its footer row.

    Example:
        >>> field_info("Total Cases", "Cases Total", kind="integer", sum_of="products.cases")["sum_of"]
        'products.cases'
    """
    extra: JsonDict = {}
    if labels:
        extra["labels"] = list(labels)
    if kind is not None:
        if kind not in FIELD_KINDS:
            raise ValueError(f"Unknown field kind {kind!r}; choose one of: {', '.join(FIELD_KINDS)}.")
        extra["kind"] = kind
    if sum_of is not None:
        extra["sum_of"] = sum_of
    if last_page or sum_of is not None:
        extra["last_page"] = True
    if ocr_pattern is not None:
        extra["ocr_pattern"] = ocr_pattern
    if footer_labels:
        extra["footer_labels"] = list(footer_labels)
    return extra


def field_labels(*words: str) -> JsonDict:
    """``json_schema_extra`` naming only the words that label a field on paper (`field_info` says more).

    Example:
        >>> field_labels("Shipment ID", "Shipment #")
        {'labels': ['Shipment ID', 'Shipment #']}
    """
    return field_info(*words)


@dataclass(frozen=True)
class LeafField:
    """One leaf of a schema, named by its path (``"shipment_id"``, ``"products.cases"``).

    Attributes:
        path: dotted path; list items are not numbered (``products.cases`` is the cases of every product).
        kind: what the value means (``text``, ``code``, ``integer``, ``decimal``, ``date``, ``currency``,
            ``boolean``), declared with `field_info` or inferred from the annotation.
        labels: words that label this field on a printed document (declared, else the humanised field name).
        in_list: the path of the enclosing list field, if any (``"products"``).
        required: whether the field must be present.
        json_type: the JSON type the schema gives the value (``"string"`` for a ``str`` field of any kind).
        key: the last part of the path.
        sum_of: for a total, the list column it adds up.
        last_page: on a multi-page document, taken from the last page that has it.
        ocr_pattern: a pattern the value matches (spacing repairs), or ``None``.
        max_length: the longest value the schema allows, when it bounds it.
    """

    path: str
    kind: FieldKind
    labels: tuple[str, ...]
    in_list: str | None = None
    required: bool = True
    json_type: JsonType = "string"
    key: str = ""
    sum_of: str | None = None
    last_page: bool = False
    ocr_pattern: str | None = None
    max_length: int | None = None

    @property
    def numeric(self) -> bool:
        """Whether values compare as numbers (integer and decimal kinds, or a JSON number)."""
        return self.kind in ("integer", "decimal") or self.json_type in ("integer", "number")


@dataclass(frozen=True)
class ObjectNode:
    """An object of the schema: its scalar fields, nested objects (sections) and lists of objects (tables).

    Attributes:
        path: dotted path of the object (``""`` for the document, ``"seller"``, ``"products"``).
        key: the last part of the path.
        labels: words that head the object on paper (``"Bill To"``) or start a list's footer row.
        required: whether the object must be present.
        is_list: whether this is the item of a list field.
        fields: scalar children, in declaration order.
        sections: nested objects, in declaration order.
        tables: lists of objects, in declaration order.
        order: every child key, in declaration order (the order targets are written in).
        footer_labels: for a list, the words that start its footer row.
    """

    path: str
    key: str
    labels: tuple[str, ...]
    required: bool
    is_list: bool
    fields: tuple[LeafField, ...]
    sections: tuple[ObjectNode, ...]
    tables: tuple[ObjectNode, ...]
    order: tuple[str, ...]
    footer_labels: tuple[str, ...] = ()
    model: type[BaseModel] | None = field(default=None, compare=False, repr=False)

    @functools.cached_property
    def leaves(self) -> tuple[LeafField, ...]:
        """Every leaf below this object, in declaration order (computed once: the tree is frozen)."""
        out: list[LeafField] = []
        children: dict[str, LeafField | ObjectNode] = {f.key: f for f in self.fields}
        children.update({s.key: s for s in (*self.sections, *self.tables)})
        for key in self.order:
            node = children[key]
            if isinstance(node, LeafField):
                out.append(node)
            else:
                out.extend(node.leaves)
        return tuple(out)

    def leaf(self, path: str) -> LeafField | None:
        """The leaf at ``path`` (list items unnumbered), or ``None``."""
        return next((leaf for leaf in self.leaves if leaf.path == path), None)

    def totals_of(self, table: ObjectNode) -> dict[str, LeafField]:
        """The fields of this object that add up a column of ``table``: column key -> total field."""
        out: dict[str, LeafField] = {}
        for leaf in self.fields:
            if leaf.sum_of and leaf.sum_of.rsplit(".", 1)[0] == table.path:
                out[leaf.sum_of.rsplit(".", 1)[1]] = leaf
        return out


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other annotation -> ``(annotation, False)``."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _inferred_kind(annotation: Any) -> FieldKind:
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if isinstance(annotation, type) and issubclass(annotation, (float, decimal.Decimal)):
        return "decimal"
    if annotation in (datetime.date, datetime.datetime):
        return "date"
    return "text"


def _json_type(annotation: Any) -> JsonType:
    """The JSON type of a value of ``annotation``: what its inferred kind serialises as."""
    types_of: dict[str, JsonType] = {"boolean": "boolean", "integer": "integer", "decimal": "number"}
    return types_of.get(_inferred_kind(annotation), "string")


def _humanise(name: str) -> str:
    return name.replace("_", " ").strip().title()


def _extra(info: Any) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _words(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(x) for x in value) if isinstance(value, (list, tuple)) and value else default


def _max_length(info: Any) -> int | None:
    for meta in info.metadata:
        limit = getattr(meta, "max_length", None)
        if isinstance(limit, int):
            return limit
    return None


def build_tree(
    model: type[BaseModel],
    path: str = "",
    *,
    key: str = "",
    labels: tuple[str, ...] = (),
    required: bool = True,
    is_list: bool = False,
    footer_labels: tuple[str, ...] = (),
    in_list: str | None = None,
) -> ObjectNode:
    """The field tree of ``model`` (a `SchemaSpec` builds it once; read it as ``spec.tree``)."""
    fields: list[LeafField] = []
    sections: list[ObjectNode] = []
    tables: list[ObjectNode] = []
    order: list[str] = []
    for name, info in model.model_fields.items():
        child_key = info.alias or name
        child_path = f"{path}.{child_key}" if path else child_key
        order.append(child_key)
        annotation, optional = unwrap_optional(info.annotation)
        child_required = info.is_required() and not optional
        extra = _extra(info)
        child_labels = _words(extra.get("labels"), (_humanise(child_key),))
        if typing.get_origin(annotation) in (list, tuple) and typing.get_args(annotation):
            item, _ = unwrap_optional(typing.get_args(annotation)[0])
            if isinstance(item, type) and issubclass(item, BaseModel):
                tables.append(
                    build_tree(
                        item,
                        child_path,
                        key=child_key,
                        labels=child_labels,
                        required=child_required,
                        is_list=True,
                        footer_labels=_words(extra.get("footer_labels"), FOOTER_LABELS),
                        in_list=child_path,
                    )
                )
                continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append(
                build_tree(
                    annotation,
                    child_path,
                    key=child_key,
                    labels=child_labels,
                    required=child_required,
                    in_list=in_list,
                )
            )
            continue
        kind = extra.get("kind") or _inferred_kind(annotation)
        if kind not in FIELD_KINDS:
            raise ValueError(
                f"{model.__name__}.{name}: unknown field kind {kind!r}; choose one of: {', '.join(FIELD_KINDS)}."
            )
        pattern = extra.get("ocr_pattern")
        sum_of = extra.get("sum_of")
        fields.append(
            LeafField(
                path=child_path,
                kind=kind,
                labels=child_labels,
                in_list=in_list,
                required=child_required,
                json_type=_json_type(annotation),
                key=child_key,
                sum_of=sum_of if isinstance(sum_of, str) else None,
                last_page=bool(extra.get("last_page")),
                ocr_pattern=pattern if isinstance(pattern, str) else None,
                max_length=_max_length(info),
            )
        )
    return ObjectNode(
        path=path,
        key=key,
        labels=labels,
        required=required,
        is_list=is_list,
        fields=tuple(fields),
        sections=tuple(sections),
        tables=tuple(tables),
        order=tuple(order),
        footer_labels=footer_labels,
        model=model,
    )
