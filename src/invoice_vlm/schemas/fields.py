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

Examples:
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
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args

from pydantic import BaseModel
from pydantic.config import JsonDict

__all__ = [
    "FIELD_KINDS",
    "FIELD_ROLES",
    "FOOTER_LABELS",
    "KIND_FORMS",
    "ROLE_LABELS",
    "FieldKind",
    "FieldRole",
    "JsonType",
    "LeafField",
    "ObjectNode",
    "PrintedForm",
    "build_tree",
    "currency_codes",
    "field_info",
    "field_labels",
    "kind_pattern",
    "pattern_width",
    "unwrap_optional",
]

FieldKind = Literal["text", "code", "integer", "decimal", "date", "currency", "boolean"]
FIELD_KINDS: tuple[str, ...] = get_args(FieldKind)
FieldRole = Literal["issuer", "recipient", "payable", "issue_date", "document_number"]
FIELD_ROLES: tuple[str, ...] = get_args(FieldRole)
"""What a field is on a business document when no label names it; see `field_info`'s ``role``."""
JsonType = Literal["string", "integer", "number", "boolean"]

ROLE_LABELS: dict[FieldRole, tuple[str, ...]] = {
    "document_number": (
        "Invoice Number", "Invoice No.", "Invoice #", "Invoice No", "Invoice ID", "Invoice", "Receipt No.",
        "Receipt #", "Order #", "Bill No.", "Beleg-Nr.", "Bon-Nr.", "Ticket N°", "Bonnummer", "Booking ID",
        "Document No.", "Numéro de facture", "N° de facture", "Facture N°", "Facture n°", "Rechnungsnummer",
        "Rechnungs-Nr.", "Rechnung Nr.", "Rechnung", "Factuurnummer", "Factuurnr.", "Factuur nr",
        "Número de factura", "Factura N°", "Nº factura", "Numero fattura", "Fattura n.", "Fattura N°", "Invoice Num",
        "Inv No", "Inv. No.", "Inv #", "Doc No", "Document Number", "Receipt Number", "Receipt No", "Bill No",
        "Bill Number", "Bill #", "Order ID", "Order No.", "Order Number", "Booking No.", "Booking Number",
        "Booking Reference", "Reference", "Ref.", "Transaction No.", "Trans No", "Reçu N°", "Commande N°",
        "N° de commande", "Belegnummer", "Bestellnummer", "Buchungsnummer", "Bestelnummer", "Ordernummer",
        "Recibo N°", "Nº de pedido", "Ricevuta n.", "Ordine n.",
    ),
    "issue_date": (
        "Invoice Date", "Date", "Issued", "Date of issue", "Issue Date", "Billing Date", "Date de facture",
        "Date de facturation", "Rechnungsdatum", "Datum", "Factuurdatum", "Fecha", "Fecha de factura", "Data",
        "Data fattura", "Receipt Date", "Order Date", "Bill Date", "Document Date", "Date facture", "Belegdatum",
        "Datum factuur", "Fecha emisión", "Data emissione",
    ),
    "issuer": (
        "Seller", "From", "Vendor", "Supplier", "Fournisseur", "Vendeur", "Verkäufer", "Lieferant", "Leverancier",
        "Verkoper", "Proveedor", "Vendedor", "Fornitore", "Venditore",
    ),
    "recipient": (
        "Buyer", "Bill To", "Billed To", "Customer", "Sold To", "Client", "Facturé à", "Kunde", "Rechnungsempfänger",
        "Rechnungsadresse", "Klant", "Factuuradres", "Cliente", "Facturar a", "Invoice To", "Bill-To",
        "Adresse de facturation", "Destinataire",
    ),
    "payable": (
        "Total", "Total Due", "Amount Due", "Balance Due", "Grand Total", "Total Amount", "Amount Paid", "Total TTC",
        "Montant TTC", "Net à payer", "Montant total", "Gesamtbetrag", "Rechnungsbetrag", "Gesamtsumme", "Endbetrag",
        "Summe", "Totaal", "Totaalbedrag", "Te betalen", "Total a pagar", "Importe total", "Totale",
        "Totale fattura", "Importo totale", "Total Payable", "Amount Payable", "Total (Incl. Tax)",
        "Total incl. VAT", "Total Sales", "Nett Total", "Total à payer", "Totaal incl. BTW", "Te voldoen",
        "Zu zahlen", "Total TVAC",
    ),
}  # fmt: skip
"""The words that label each role's field on business documents, in English, French, German, Dutch, Spanish and
Italian. A field declared with a role is matched by its own labels first, then by these, so a schema of one's own
reads ``Inv No``, ``Belegnummer`` or ``Bill To`` without listing them."""

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


# --- printed forms: what a value of each kind may look like in a string field --------------------------------------

REPEAT = "@"
"""Stands for the largest repeat count that keeps a form within a field's ``max_length`` (see `PrintedForm.regex`)."""
_MAX_REPEAT = {"digits": 15, "groups": 4}

_YEAR = r"[12][0-9]{3}"
_LEAP_YEAR = r"([12][0-9](0[48]|[2468][048]|[13579][26])|(1[26]|2[048])00)"
_ISO = (
    rf"({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))"
    rf"|{_LEAP_YEAR}-02-29)"
)
_SEP = r"[./-]"
_DAY_FIRST = (
    rf"(((0?[1-9]|[12][0-9]|3[01]){_SEP}(0?[13578]|1[02])|(0?[1-9]|[12][0-9]|30){_SEP}(0?[469]|11)"
    rf"|(0?[1-9]|1[0-9]|2[0-8]){_SEP}0?2){_SEP}{_YEAR}|29{_SEP}0?2{_SEP}{_LEAP_YEAR})"
)
_FRACTION = r"[0-9]{1,6}"
_SYMBOLS = "(€|\\$|£|¥|₹)"
_CODES = "(EUR|USD|GBP|CHF|JPY|INR)"


@dataclass(frozen=True)
class PrintedForm:
    """One way a value of a kind is printed, as a bounded regular expression with examples.

    The kind table (`KIND_FORMS`) is the one place that says what a string field of a kind may hold: constrained
    decoding allows exactly its forms (`kind_pattern`), normalisation reads every one of them, and the tests check
    both directions on every example and on strings sampled from each pattern.

    Attributes:
        name: what the form is (``"grouped with commas"``).
        pattern: the form's regular expression, unanchored; `REPEAT` (``@``) in a quantifier stands for the largest
            count that fits the field's length bound.
        examples: printed values of this form.
        repeat: what `REPEAT` counts (``"digits"`` up to 15, ``"groups"`` of three digits up to 4).
    """

    name: str
    pattern: str
    examples: tuple[str, ...]
    repeat: str = "digits"

    def regex(self, max_length: int | None = None) -> str | None:
        r"""The pattern with `REPEAT` filled in so that no match is longer than ``max_length``; ``None`` if none fits.

        Examples:
            >>> print(KIND_FORMS["integer"][0].regex(4))
            -?[0-9]{1,3}
        """
        if REPEAT not in self.pattern:
            fits = max_length is None or pattern_width(self.pattern) <= max_length
            return self.pattern if fits else None
        for count in range(_MAX_REPEAT[self.repeat], 0, -1):
            pattern = self.pattern.replace(REPEAT, str(count))
            if max_length is None or pattern_width(pattern) <= max_length:
                return pattern
        return None


def _amounts(fraction: bool) -> tuple[PrintedForm, ...]:

    def tail(sep: str) -> str:
        return rf"({sep}{_FRACTION})?" if fraction else ""

    return (
        PrintedForm("digits", rf"-?[0-9]{{1,{REPEAT}}}" + tail("[.,]"), ("0", "60", "-3", "1200", "12.5", "4,50") if fraction else ("0", "60", "-3", "1200")),
        PrintedForm("grouped with commas", rf"-?[0-9]{{1,3}}(,[0-9]{{3}}){{1,{REPEAT}}}" + tail(r"\."), ("1,200", "12,345,678") + (("1,012.50",) if fraction else ()), "groups"),
        PrintedForm("grouped with points", rf"-?[0-9]{{1,3}}(\.[0-9]{{3}}){{1,{REPEAT}}}" + tail(","), ("1.200",) + (("4.904,94",) if fraction else ()), "groups"),
        PrintedForm("grouped with spaces", rf"-?[0-9]{{1,3}}( [0-9]{{3}}){{1,{REPEAT}}}" + tail("[.,]"), ("1 200",) + (("1 234,50",) if fraction else ()), "groups"),
        PrintedForm("grouped with apostrophes", rf"-?[0-9]{{1,3}}('[0-9]{{3}}){{1,{REPEAT}}}" + tail(r"\."), ("1'200",) + (("1'234.50",) if fraction else ()), "groups"),
    )  # fmt: skip


def _with_currency(form: PrintedForm) -> tuple[PrintedForm, ...]:
    return (
        PrintedForm(f"{form.name}, symbol before", f"{_SYMBOLS} ?{form.pattern}", tuple(f"€ {e}" for e in form.examples[:1]), form.repeat),
        PrintedForm(f"{form.name}, symbol after", f"{form.pattern} ?{_SYMBOLS}", tuple(f"{e} €" for e in form.examples[:1]), form.repeat),
        PrintedForm(f"{form.name}, code before", f"{_CODES} {form.pattern}", tuple(f"EUR {e}" for e in form.examples[:1]), form.repeat),
        PrintedForm(f"{form.name}, code after", f"{form.pattern} {_CODES}", tuple(f"{e} CHF" for e in form.examples[:1]), form.repeat),
    )  # fmt: skip


_DECIMALS = _amounts(fraction=True)

KIND_FORMS: dict[str, tuple[PrintedForm, ...]] = {
    "integer": _amounts(fraction=False),
    "decimal": (*_DECIMALS, *(f for form in _DECIMALS for f in _with_currency(form))),
    "date": (
        PrintedForm("ISO yyyy-mm-dd", _ISO, ("2024-03-04", "2024-02-29", "1999-12-31")),
        PrintedForm("day first, numeric", _DAY_FIRST, ("04/03/2024", "4.3.2024", "31-12-2023", "29/02/2024")),
    ),
    "currency": (
        PrintedForm("ISO 4217 code", "CODES", ("EUR", "USD", "INR")),
        PrintedForm("symbol", _SYMBOLS, ("€", "$", "£", "¥", "₹")),
    ),
    "boolean": (PrintedForm("words", "(true|false|yes|no)", ("true", "false", "yes", "no")),),
}
"""Kind -> the printed forms a string field of that kind may hold (text and code: anything; see `kind_pattern`).

The currency form ``CODES`` stands for every ISO 4217 code babel knows (`currency_codes`)."""


@functools.lru_cache(maxsize=1)
def currency_codes() -> tuple[str, ...]:
    """Every ISO 4217 code the currency form allows and normalisation reads (babel's list), sorted."""
    from babel.numbers import list_currencies

    return tuple(sorted(code for code in list_currencies() if len(code) == 3 and code.isalpha()))


def pattern_width(pattern: str) -> int:
    r"""The most characters a match of ``pattern`` can have (a very large number when unbounded).

    Examples:
        >>> pattern_width(r"-?\d{1,3}(,\d{3}){1,2}")
        12
    """
    import importlib

    sre_parse = importlib.import_module("re._parser")  # the stdlib's regex parser (Python 3.11+)
    return int(sre_parse.parse(pattern).getwidth()[1])


def kind_pattern(leaf: LeafField) -> str | None:
    r"""The anchored regular expression a string value of ``leaf`` may match, from its kind's forms.

    ``None`` for text and code fields without a declared pattern (anything within the length bound).

    A declared ``pattern`` keeps the forms whose every example it accepts (``^\d{4}-\d{2}-\d{2}$`` keeps ISO
    dates only: the field stores canonical values); a ``max_length`` keeps each form within it. Code and text
    fields with a declared pattern keep it as it is.

    Raises:
        ValueError: the declared pattern or length bound leaves no form of the field's kind; the message names it.

    Examples:
        >>> leaf = LeafField(path="total_cases", kind="integer", labels=(), max_length=12)
        >>> print(kind_pattern(leaf))
        ^(-?[0-9]{1,11}|-?[0-9]{1,3}(,[0-9]{3}){1,2}|-?[0-9]{1,3}(\.[0-9]{3}){1,2}|-?[0-9]{1,3}( [0-9]{3}){1,2}|-?[0-9]{1,3}('[0-9]{3}){1,2})$
    """
    if leaf.json_type != "string" or leaf.choices:
        return None
    forms = KIND_FORMS.get(leaf.kind)
    if not forms:
        return f"^{leaf.pattern.removeprefix('^').removesuffix('$')}$" if leaf.pattern else None
    declared = re.compile(leaf.pattern) if leaf.pattern else None
    kept: list[str] = []
    for form in forms:
        if declared is not None and not all(declared.search(e) for e in form.examples):
            continue
        regex = form.regex(leaf.max_length)
        if regex is None:
            continue
        if regex == "CODES":
            codes = [c for c in currency_codes() if declared is None or declared.search(c)]
            if leaf.max_length is not None and leaf.max_length < 3:
                continue
            regex = f"({'|'.join(codes)})"
        kept.append(regex)
    if not kept:
        bound = f" and max_length {leaf.max_length}" if leaf.max_length is not None else ""
        raise ValueError(
            f"field {leaf.path!r} of kind {leaf.kind!r}: its pattern {leaf.pattern!r}{bound} leave none of the "
            f"kind's printed forms ({', '.join(f.name for f in forms)}); loosen them or declare another kind."
        )
    return f"^({'|'.join(kept)})$"


def field_info(
    *labels: str,
    kind: FieldKind | None = None,
    sum_of: str | None = None,
    last_page: bool = False,
    ocr_pattern: str | None = None,
    footer_labels: tuple[str, ...] = (),
    adds_to: str | None = None,
    subtracts: bool = False,
    role: FieldRole | None = None,
) -> JsonDict:
    """``json_schema_extra`` that tells invoice_vlm what a field is and how it is printed.

    Args:
        *labels: words that label the field on paper, in any language (``"Invoice No."``, ``"Rechnungsnummer"``).
        kind: what the value means (see the module table); inferred from the annotation when omitted.
        sum_of: for a total, the list column it adds up (``"products.cases"``); a mismatch is a field error.
        last_page: on a multi-page document, take this field from the last page that prints it (totals).
        ocr_pattern: a regular expression the value matches, used to repair OCR's spacing slips.
        footer_labels: for a list field, extra words that start its footer row.
        adds_to: for an amount, the total it is part of (``"total"``); the total must equal the sum of its parts.
        subtracts: with ``adds_to``, the amount is taken off the total (a discount) instead of added.
        role: what the field is on a business document when no label names it (see `FIELD_ROLES`): ``"issuer"``
            (an object printed as the letterhead), ``"recipient"`` (an object under Bill To / Sold To),
            ``"payable"`` (the amount to pay), ``"issue_date"``, ``"document_number"``. A role brings its common
            labels in six languages (`ROLE_LABELS`) after the field's own, and the offline reader uses it to find
            unlabelled key values (the letterhead, the amount payable among several, a date beside a time).

    Examples:
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
    if adds_to is not None:
        extra["adds_to"] = adds_to
        if subtracts:
            extra["subtracts"] = True
    if role is not None:
        if role not in FIELD_ROLES:
            raise ValueError(f"Unknown field role {role!r}; choose one of: {', '.join(FIELD_ROLES)}.")
        extra["role"] = role
    return extra


def field_labels(*words: str) -> JsonDict:
    """``json_schema_extra`` naming only the words that label a field on paper (`field_info` says more).

    Examples:
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
        max_length: the longest value the schema allows, when it bounds it (each item's, for a list of values).
        pattern: the pattern the schema declares for the value, if any.
        choices: the values a ``Literal`` or ``Enum`` field allows (empty when any value of its kind is allowed).
        many: a list of values (``list[str]``, ``list[date]``): normalised, read and scored item by item.
        max_items: for a list of values, the most items it may hold, when bounded.
        adds_to: for an amount, the total it adds to (``"total"``): subtotal, tax, shipping, rounding; declared with
            `field_info` (``adds_to="total"``). The total is checked against the sum of what adds to it.
        sign: ``-1`` for an amount taken off the total (a discount: ``field_info(adds_to="total", subtracts=True)``).
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
    pattern: str | None = None
    choices: tuple[Any, ...] = ()
    many: bool = False
    max_items: int | None = None
    adds_to: str | None = None
    sign: int = 1
    role: FieldRole | None = None

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
        role: for a nested object, ``"issuer"`` or ``"recipient"`` (see `field_info`).
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
    role: FieldRole | None = None

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
    choices = _choices(annotation)
    if choices and all(isinstance(c, bool) for c in choices):
        return "boolean"
    if choices and all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return "integer"
    if isinstance(annotation, type) and issubclass(annotation, decimal.Decimal):
        return "string"  # pydantic writes a Decimal as a JSON string, and targets are written so
    types_of: dict[str, JsonType] = {"boolean": "boolean", "integer": "integer", "decimal": "number"}
    return types_of.get(_inferred_kind(annotation), "string")


def _humanise(name: str) -> str:
    return name.replace("_", " ").strip().title()


def _extra(info: Any) -> dict[str, Any]:
    return info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}


def _words(value: Any, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(x) for x in value) if isinstance(value, (list, tuple)) and value else default


def _max_length(info: Any) -> int | None:
    limit = _meta_value(tuple(info.metadata), "max_length")
    return limit if isinstance(limit, int) else None


def _meta_value(metadata: tuple[Any, ...], name: str) -> Any:
    """A constraint (``max_length``, ``pattern``) from pydantic field metadata, looking inside ``Field(...)``s."""
    for meta in metadata:
        inner = getattr(meta, "metadata", None)
        if isinstance(inner, list):
            found = _meta_value(tuple(inner), name)
            if found is not None:
                return found
        value = getattr(meta, name, None)
        if value is not None and not callable(value):
            return value
    return None


@dataclass(frozen=True)
class _Canonical:
    pattern: str


def _strip_annotated(annotation: Any) -> tuple[Any, tuple[Any, ...]]:
    """``Annotated[str, Field(max_length=9)]`` -> ``(str, (FieldInfo,))``; anything else as it is."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        return base, tuple(meta)
    return annotation, ()


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values a ``Literal[...]`` or ``Enum`` annotation allows; empty for any other."""
    import enum

    if typing.get_origin(annotation) is Literal:
        return tuple(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(member.value for member in annotation)
    return ()


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
    role: FieldRole | None = None,
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
        child_labels = _with_role_labels(_words(extra.get("labels"), (_humanise(child_key),)), _role(extra))
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
                    role=_role(extra),
                )
            )
            continue
        many = False
        item_meta: tuple[Any, ...] = ()
        max_items: int | None = None
        if typing.get_origin(annotation) in (list, tuple, set, frozenset) and typing.get_args(annotation):
            many = True  # a list of plain values: one leaf whose value is a list, read item by item
            max_items = _max_length(info)
            annotation, _ = unwrap_optional(typing.get_args(annotation)[0])
            annotation, item_meta = _strip_annotated(annotation)
        kind = extra.get("kind") or _inferred_kind(annotation)
        if kind not in FIELD_KINDS:
            raise ValueError(
                f"{model.__name__}.{name}: unknown field kind {kind!r}; choose one of: {', '.join(FIELD_KINDS)}."
            )
        metadata = (*item_meta,) if many else tuple(info.metadata)
        if annotation is datetime.date and _meta_value(metadata, "pattern") is None:
            metadata = (*metadata, _Canonical(pattern=r"^\d{4}-\d{2}-\d{2}$"))  # a date field stores ISO
        pattern = extra.get("ocr_pattern")
        sum_of = extra.get("sum_of")
        adds_to = extra.get("adds_to")
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
                max_length=_meta_value(metadata, "max_length"),
                pattern=_meta_value(metadata, "pattern"),
                choices=_choices(annotation),
                many=many,
                max_items=max_items,
                adds_to=adds_to if isinstance(adds_to, str) else None,
                sign=-1 if extra.get("subtracts") else 1,
                role=_role(extra),
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
        role=role,
    )


def _with_role_labels(labels: tuple[str, ...], role: FieldRole | None) -> tuple[str, ...]:
    """A field's own labels, then its role's common ones (`ROLE_LABELS`) that it does not already list."""
    if role is None:
        return labels
    seen = {label.casefold() for label in labels}
    return labels + tuple(label for label in ROLE_LABELS[role] if label.casefold() not in seen)


def _role(extra: dict[str, Any]) -> FieldRole | None:
    role = extra.get("role")
    return role if role in FIELD_ROLES else None
