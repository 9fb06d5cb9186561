"""Normalisation by field kind: what a document prints becomes one canonical value, and the printed text is kept.

Every backend's output goes through here before validation (`normalize_document`), so a model trained on raw strings
and the offline reader both return canonical values: ISO dates, numbers for amounts, ISO 4217 currency codes.
Well-kept libraries do the reading: dateparser for dates (month names in English, French, German, Dutch, Spanish
and Italian), price-parser for amounts, babel's CLDR data for currency symbols and names.

**Day-first or month-first.** A numeric date is read as follows, the first rule that applies deciding:

1. ``yyyy-mm-dd`` (and ``yyyy/mm/dd``, ``yyyy.mm.dd``) is year-month-day;
2. a part above 12 fixes the order (``28/11/2022`` is day-first, ``11/28/2022`` month-first);
3. the schema's ``date_order`` when it sets one;
4. the order of another date in the same document that rule 2 fixed;
5. month-first when the document's currency is USD (US invoices), else day-first (most of the world).

A value that cannot be read is left as printed; a date, amount or currency field then gets a field error saying
what was printed, so nothing is silently dropped or guessed.

Examples:
    >>> normalize_value("05 Juillet 2015", "date").value
    '2015-07-05'
    >>> normalize_value("€ 4.904,94", "decimal", json_type="number").value
    4904.94
    >>> normalize_value("₹", "currency").value
    'INR'
"""

from __future__ import annotations

import copy
import datetime
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas.fields import LeafField, ObjectNode, currency_codes

__all__ = [
    "DATE_LANGUAGES",
    "Normalized",
    "NormalizedDocument",
    "normalize_amount",
    "normalize_currency",
    "normalize_date",
    "normalize_document",
    "normalize_value",
]

DATE_LANGUAGES = ("en", "fr", "de", "nl", "es", "it")
"""Languages whose month names dates are read in."""

DateOrder = Literal["DMY", "MDY", "YMD"]

_WS = re.compile(r"\s+")
_ISO = re.compile(r"^\s*(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})\s*$")
_NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})\s*[-/.]\s*(\d{1,2})\s*[-/.]\s*(\d{2}|\d{4})\s*\.?\s*$")
_AMOUNT_CHARS = re.compile(r"[\d.,'\u2019 \u00a0\u202f]+")
_SPACED = re.compile(r"\d[ \u00a0\u202f]+\d")
_SPACE_GROUPED = re.compile(r"^\d{1,3}([ \u00a0\u202f]\d{3})+([.,]\d+)?$")  # 1 234 567,50: groups of three
_TRUE = {"true", "yes", "y", "x", "ja", "oui", "si", "sí", "1", "✓", "✔"}
_FALSE = {"false", "no", "n", "nein", "non", "nee", "0", ""}


@dataclass(frozen=True)
class Normalized:
    """One normalised value.

    Attributes:
        value: the canonical value, or the printed one when it could not be read.
        printed: the text as printed (``None`` when the input was not text).
        error: why the printed text could not be read as its kind, else ``None``.
        currency: for an amount, the currency printed beside it (ISO 4217), if any.
    """

    value: Any
    printed: str | None = None
    error: str | None = None
    currency: str | None = None


@dataclass
class NormalizedDocument:
    """A document after normalisation.

    Attributes:
        data: the document with canonical values.
        printed: leaf path (``"line_items[0].amount"``) -> the printed text, for every value that changed.
        field_errors: leaf path -> why the printed value could not be read as its kind.
    """

    data: dict[str, Any]
    printed: dict[str, str] = field(default_factory=dict)
    field_errors: dict[str, str] = field(default_factory=dict)


# --- currencies ---------------------------------------------------------------------------------------------------

_HOME_LOCALES = (
    # Where a symbol is shared ($, kr, ¥), the first locale listed wins: the currency most documents mean.
    "en_US", "en_GB", "fr_FR", "en_IN", "ja_JP", "ko_KR", "ru_RU", "tr_TR", "pt_BR", "pl_PL", "de_CH", "sv_SE",
    "da_DK", "nb_NO", "cs_CZ", "hu_HU", "th_TH", "vi_VN", "uk_UA", "he_IL", "zh_CN", "en_NG", "en_PH", "ro_RO",
    "bg_BG", "id_ID", "ms_MY", "en_ZA", "ar_AE", "en_AU", "en_CA", "en_NZ", "es_MX", "en_SG", "zh_HK",
)  # fmt: skip


@functools.lru_cache(maxsize=1)
def _currency_table() -> tuple[frozenset[str], dict[str, str]]:
    """ISO 4217 codes (the field tree's, which the grammar allows), and printed symbols/names (lower case) -> code."""
    from babel import Locale
    from babel.numbers import get_currency_name, get_currency_symbol, get_territory_currencies

    codes = frozenset(currency_codes())
    names: dict[str, str] = {}
    for loc in _HOME_LOCALES:
        code = get_territory_currencies(loc.split("_")[1])[0]
        for symbol in (get_currency_symbol(code, locale=loc), get_currency_symbol(code, locale="en")):
            names.setdefault(symbol.lower(), code)
        names.setdefault(get_currency_name(code, locale=loc).lower(), code)
    for lang in DATE_LANGUAGES:
        locale = Locale.parse(lang)
        for code in ("EUR", "USD", "GBP", "CHF", "JPY", "INR"):
            names.setdefault(get_currency_name(code, locale=locale).lower(), code)
            names.setdefault(get_currency_name(code, count=2, locale=locale).lower(), code)
    for code in codes:
        names.setdefault(code.lower(), code)
    return codes, names


def normalize_currency(text: str) -> str | None:
    """An ISO 4217 code for a printed code, symbol or name (``"€"``, ``"eur"``, ``"US$"``, ``"Euro"``), or ``None``.

    Examples:
        >>> " ".join(normalize_currency(t) or "?" for t in ("€", "$", "₹", "EUR", "£", "zł", "CHF", "euros", "¥", "R$"))
        'EUR USD INR EUR GBP PLN CHF EUR JPY BRL'
    """
    codes, names = _currency_table()
    cleaned = _WS.sub(" ", text).strip().strip(".:()").strip()
    if not cleaned:
        return None
    if cleaned.upper() in codes:
        return cleaned.upper()
    return names.get(cleaned.lower())


# --- amounts ------------------------------------------------------------------------------------------------------


def normalize_amount(text: str) -> tuple[Decimal | None, str | None]:
    """``(amount, ISO currency or None)`` read from printed text, or ``(None, None)`` when it holds no amount.

    Either decimal separator and any thousands grouping (``1,012.50``, ``4.904,94``, ``1 234,56``, ``1'234.50``,
    ``12,34,567.00``) are read; a leading minus or parentheses make it negative. Text that is more than an amount
    with a currency (``AMOUNT DUE ON August 3, 2014``) is not an amount, and neither are numbers a space runs
    together other than in groups of three digits (``1 6.00``, a quantity beside an amount, is not ``16.00``).

    Examples:
        >>> normalize_amount("€ 4.904,94")
        (Decimal('4904.94'), 'EUR')
        >>> normalize_amount("(12,50)")
        (Decimal('-12.50'), None)
        >>> normalize_amount("1 6.00"), normalize_amount("1 234,50")
        ((None, None), (Decimal('1234.50'), None))
    """
    from price_parser import Price

    cleaned = _WS.sub(" ", text).strip()
    if not cleaned or not any(c.isdigit() for c in cleaned):
        return None, None
    price = Price.fromstring(cleaned)
    if price.amount is None:
        return None, None
    currency = normalize_currency(price.currency) if price.currency else None
    rest = cleaned
    if price.currency:
        rest = rest.replace(price.currency, " ", 1)
    match = max(_AMOUNT_CHARS.finditer(rest), key=lambda m: sum(c.isdigit() for c in m.group()), default=None)
    if match and _SPACED.search(match.group()) and not _SPACE_GROUPED.match(match.group().strip()):
        return None, None  # "1 6.00" is a quantity and an amount run together, not 16.00
    leftover = (rest[: match.start()] + " " + rest[match.end() :]) if match else rest
    letters = re.sub(r"[\s\-+()*:=€$£¥₹%]", "", leftover)
    if len(letters) > 3:  # more than a currency code or a unit: not an amount
        return None, None
    negative = bool(re.search(r"(^|\s)[-\u2212]\s*[\d€$£¥₹]|[-\u2212]$|^\(.*\)$", cleaned))
    amount = -price.amount if negative else price.amount
    return amount, currency


# --- dates --------------------------------------------------------------------------------------------------------


def _numeric_date(text: str) -> tuple[int, int, int] | None:
    m = _NUMERIC_DATE.match(text)
    if not m:
        return None
    a, b, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if year < 100:
        year += 2000 if year < 70 else 1900
    return a, b, year


def date_order_of(text: str) -> DateOrder | None:
    """The order a numeric date's own digits fix (a part above 12), else ``None``.

    Examples:
        >>> date_order_of("28/11/2022"), date_order_of("11/28/2022"), date_order_of("03/04/2024")
        ('DMY', 'MDY', None)
    """
    if _ISO.match(text):
        return "YMD"
    parts = _numeric_date(text)
    if parts is None:
        return None
    a, b, _ = parts
    if a > 12 >= b:
        return "DMY"
    if b > 12 >= a:
        return "MDY"
    return None


def normalize_date(text: str, order: DateOrder | None = None) -> datetime.date | None:
    """A printed date as a `datetime.date`, or ``None`` when it is not one.

    Args:
        text: the printed date: numeric in any order, or with a month name in English, French, German, Dutch,
            Spanish or Italian.
        order: how to read an ambiguous numeric date (see the module docstring); day-first when ``None``.

    Examples:
        >>> " ".join(str(normalize_date(t)) for t in ("August 3, 2014", "20-10-2015", "3. März 2024", "12 januari 2023"))
        '2014-08-03 2015-10-20 2024-03-03 2023-01-12'
        >>> str(normalize_date("03/04/2024", "MDY"))
        '2024-03-04'
    """
    cleaned = _WS.sub(" ", text).strip().rstrip(",;")
    if not cleaned or not any(c.isdigit() for c in cleaned):
        return None  # "yesterday" and the like are not printed dates
    iso = _ISO.match(cleaned)
    try:
        if iso:
            return datetime.date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
        parts = _numeric_date(cleaned)
        if parts is not None:
            a, b, year = parts
            fixed = date_order_of(cleaned) or order or "DMY"
            day, month = (a, b) if fixed == "DMY" else (b, a)
            return datetime.date(year, month, day)
    except ValueError:
        return None
    if sum(c.isalpha() for c in cleaned) < 3:
        return None
    import dateparser

    parsed = dateparser.parse(
        cleaned,
        languages=list(DATE_LANGUAGES),
        settings={
            "DATE_ORDER": order or "DMY",
            "REQUIRE_PARTS": ["day", "month", "year"],
            "STRICT_PARSING": True,
            "RETURN_TIME_AS_PERIOD": False,
        },
    )
    return parsed.date() if parsed is not None else None


# --- one value ----------------------------------------------------------------------------------------------------


def _canonical_number(number: Decimal, json_type: str) -> Any:
    if json_type == "integer":
        return int(number)
    if json_type == "number":
        return float(number)
    text = format(number.normalize(), "f") if number == number.to_integral_value() else format(number, "f")
    return text


def normalize_value(
    value: Any, kind: str, *, json_type: str = "string", date_order: DateOrder | None = None
) -> Normalized:
    """Normalise one leaf value for its field kind (see `invoice_vlm.schemas.fields`).

    A value that is already canonical comes back unchanged; a printed one comes back canonical with ``printed``
    set; one that cannot be read comes back as printed with ``error`` set.

    Examples:
        >>> normalize_value("1.200", "integer", json_type="integer").value
        1200
        >>> normalize_value("20-10-2015", "date")
        Normalized(value='2015-10-20', printed='20-10-2015', error=None, currency=None)
    """
    if value is None or (isinstance(value, bool) and kind == "boolean"):
        return Normalized(value)
    if isinstance(value, (dict, list)):
        return Normalized(value, error=f"expected one {kind} value, got a JSON {type(value).__name__}")
    if not isinstance(value, str):
        if kind in ("integer", "decimal") and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = Decimal(str(value))
            except InvalidOperation:
                return Normalized(value)
            canonical = _canonical_number(number, json_type)
            return Normalized(canonical, printed=None if canonical == value else str(value))
        if kind in ("text", "code") and json_type == "string" and isinstance(value, (int, float)):
            return Normalized(str(value), printed=str(value))
        return Normalized(value)
    text = _WS.sub(" ", value).strip()
    printed = value

    def done(canonical: Any, currency: str | None = None) -> Normalized:
        return Normalized(canonical, None if canonical == value else printed, None, currency)

    if kind in ("text", "code"):
        return done(text if text else None)
    if not text:
        return done(None)
    if kind == "integer":
        amount, _ = normalize_amount(re.sub(r"(?<=\d)[.,'\u2019 ](?=\d{3}\b)", "", text))
        if amount is None or amount != amount.to_integral_value():
            return Normalized(value, printed, f"{value!r} is not a whole number")
        return done(_canonical_number(Decimal(int(amount)), json_type))
    if kind == "decimal":
        amount, currency = normalize_amount(text)
        if amount is None:
            return Normalized(value, printed, f"{value!r} is not an amount")
        return done(_canonical_number(amount, json_type), currency)
    if kind == "date":
        day = normalize_date(text, date_order)
        if day is None:
            return Normalized(value, printed, f"{value!r} is not a date")
        return done(day.isoformat())
    if kind == "currency":
        code = normalize_currency(text)
        if code is None:
            code = normalize_amount(text)[1] if any(c.isdigit() for c in text) else None
        if code is None:
            return Normalized(value, printed, f"{value!r} is not a currency (an ISO 4217 code such as 'EUR')")
        return done(code)
    if kind == "boolean":
        low = text.lower()
        if low in _TRUE:
            return done(True if json_type == "boolean" else "true")  # a str field keeps a string
        if low in _FALSE:
            return done(False if json_type == "boolean" else "false")
        return Normalized(value, printed, f"{value!r} is not yes or no")
    return done(text)


# --- a document ---------------------------------------------------------------------------------------------------


def _walk(
    node: ObjectNode, data: dict[str, Any], shown: str
) -> Iterator[tuple[LeafField, dict[str, Any], str]]:
    """(leaf, the dict holding it, its shown path) for every leaf present in ``data``."""
    for leaf in node.fields:
        if leaf.key in data:
            yield leaf, data, f"{shown}{leaf.key}"
    for section in node.sections:
        sub = data.get(section.key)
        if isinstance(sub, dict):
            yield from _walk(section, sub, f"{shown}{section.key}.")
    for table in node.tables:
        items = data.get(table.key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    yield from _walk(table, item, f"{shown}{table.key}[{i}].")


def _document_date_order(entries: list[tuple[LeafField, dict[str, Any], str]]) -> DateOrder | None:
    for leaf, holder, _ in entries:
        if leaf.kind == "date" and isinstance(holder[leaf.key], str):
            order = date_order_of(holder[leaf.key])
            if order in ("DMY", "MDY"):
                return order
    return None


def _amount_currencies(entries: list[tuple[LeafField, dict[str, Any], str]]) -> dict[str, str]:
    """Shown path -> ISO currency printed beside each amount that has one (``€ 717,97`` -> ``EUR``)."""
    found: dict[str, str] = {}
    for leaf, holder, shown in entries:
        if leaf.kind == "decimal" and isinstance(holder[leaf.key], str):
            code = normalize_amount(holder[leaf.key])[1]
            if code:
                found[shown] = code
    return found


def _record(result: NormalizedDocument, shown: str, found: Normalized) -> None:
    if found.printed is not None:
        result.printed[shown] = found.printed
    if found.error is not None:
        result.field_errors[shown] = found.error


def normalize_document(data: dict[str, Any], spec: SchemaSpec) -> NormalizedDocument:
    """Normalise every leaf of a parsed document for ``spec``; the input is not changed.

    Currency fields left empty are filled from the currency printed beside the document's amounts, when all of
    them agree (``€ 717,97`` means EUR); the printed text of that inference is the amount it came from.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> doc = normalize_document({"invoice_number": "A-1", "invoice_date": "3. März 2024", "total": "€ 1.234,50"},
        ...                          get_schema("invoice"))
        >>> doc.data["invoice_date"], doc.data["total"], doc.data["currency"], doc.printed["total"]
        ('2024-03-03', 1234.5, 'EUR', '€ 1.234,50')
    """
    out = copy.deepcopy(data)
    result = NormalizedDocument(out)
    entries = list(_walk(spec.tree, out, ""))
    printed_currency = next(
        (
            code
            for leaf, holder, _ in entries
            if leaf.kind == "currency" and isinstance(holder[leaf.key], str)
            for code in [normalize_currency(holder[leaf.key])]
            if code
        ),
        None,
    )
    beside_amounts = _amount_currencies(entries)
    signs = set(beside_amounts.values())
    currency = printed_currency or (next(iter(signs)) if len(signs) == 1 else None)
    order: DateOrder | None = spec.date_order or _document_date_order(entries)
    if order is None and currency == "USD":
        order = "MDY"  # a US document: its ambiguous dates are month-first
    for leaf, holder, shown in entries:
        value = holder[leaf.key]
        if leaf.many:  # a list of values: each item normalised for the field's kind
            if value is None:
                continue
            if not isinstance(value, list):
                result.field_errors[shown] = f"expected a list of {leaf.kind} values, got {value!r}"
                continue
            for index, item in enumerate(value):
                found = normalize_value(item, leaf.kind, json_type=leaf.json_type, date_order=order)
                value[index] = found.value
                _record(result, f"{shown}[{index}]", found)
            continue
        found = normalize_value(value, leaf.kind, json_type=leaf.json_type, date_order=order)
        holder[leaf.key] = found.value
        _record(result, shown, found)
    if len(signs) == 1:
        for leaf in spec.tree.fields:
            if leaf.kind == "currency" and out.get(leaf.key) in (None, ""):
                out[leaf.key] = next(iter(signs))
                result.printed[leaf.key] = result.printed[next(iter(beside_amounts))]
    return result
