"""The key values a business document prints without a label: candidates gathered from the page, then a choice.

Real receipts and invoices print their key values without a label, or with several candidates: the seller is the
letterhead, the total is one of several amounts, the date carries a time. Each reader here gathers every candidate
with its evidence (label words, position, type size, arithmetic) and picks one; the margin of that choice becomes
the value's confidence, so a doubtful pick is flagged for review. They act on the field tree's roles
(`invoice_vlm.schemas.fields.FIELD_ROLES`), so any schema that declares them is read alike; none names a template.

- **Dates** (`find_date`): a date inside text with a time appended or glued, leading punctuation, two-digit years,
  month names in six languages. The issue date is the dated line no other date word (due, delivery, print,
  expiry...) heads, highest on the page.
- **The amount payable** (`read_payable`): every amount on the page with its row's words, position and size;
  arithmetic decides between candidates (subtotal + tax + service + rounding = total, cash - change = total, the
  item lines and the tax add up to it); subtotal and tax fill their own fields only when that arithmetic holds.
- **The issuer** (`read_letterhead`): the lines at the top of the page before the first labelled line, date or
  table: the name (a company suffix, else the largest type), then the address lines up to a phone, tax id, e-mail
  or web line; the tax id from those lines when the party has one.
- **The currency** (`context_currency`): symbols and codes printed beside amounts (``RM``, ``Rs``, ``€``), and tax
  words that name a currency area (BTW, TVA, MwSt, IVA: euro; CGST/SGST/GSTIN: rupee) when nothing else is printed.
"""

from __future__ import annotations

import datetime
import itertools
import re
import statistics
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from invoice_vlm._text import similarity

if TYPE_CHECKING:
    from invoice_vlm.backends.ocr.layout import Box, _Page
    from invoice_vlm.schemas.fields import LeafField, ObjectNode

__all__ = ["Amount", "context_currency", "find_date", "read_letterhead", "read_payable"]

# --- dates ------------------------------------------------------------------------------------------------------

_MONTH = r"[^\W\d_]{3,10}\.?"
_DATE_FORMS = (
    re.compile(r"(?<!\d)\d{4}[-/.]\d{1,2}[-/.]\d{1,2}(?!\d)"),  # ISO
    # day-month-year in digits; the year may run straight into a time (17-03-201815:22:52)
    re.compile(r"(?<!\d)\d{1,2}\s?([-/.])\s?\d{1,2}\s?\1\s?(?:\d{4}|\d{2})(?=$|\D|\d{1,2}:\d{2})"),
    re.compile(rf"(?<![\w])\d{{1,2}}(?:st|nd|rd|th|er)?\.?[\s\-/]*{_MONTH},?[\s\-/]*\d{{4}}(?!\d)"),
    re.compile(rf"(?<![\w])\d{{1,2}}(?:st|nd|rd|th|er)?\.?[\s\-/]*{_MONTH},?[\s\-/]*\d{{2}}(?![\d:])"),
    re.compile(rf"(?<![\w]){_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}(?!\d)"),
)


def find_date(text: str) -> tuple[str, datetime.date] | None:
    """The first printed date inside ``text`` and what it reads as, ignoring a time and noise around it.

    Examples:
        >>> [find_date(t)[0] for t in ("17-03-201815:22:52", ":23-03-2018 13:28:55", "12 Mar 2018 08:51am")]
        ['17-03-2018', '23-03-2018', '12 Mar 2018']
        >>> find_date("Date: 1/8/2018 9:42:41 AM")[1], find_date("Total 12.50") is None
        (datetime.date(2018, 8, 1), True)
    """
    from invoice_vlm.normalize import normalize_date

    found: list[tuple[int, str, datetime.date]] = []
    for form in _DATE_FORMS:
        for m in form.finditer(text):
            printed = m.group().strip(" ,-/")
            day = normalize_date(printed)
            if day is not None and 1900 <= day.year <= 2100:
                found.append((m.start(), printed, day))
                break
    if not found:
        return None
    _, printed, day = min(found, key=lambda f: (f[0], -len(f[1])))
    return printed, day


# Words that head a date which is not the issue date.
_OTHER_DATES = (
    "due", "expiry", "expires", "exp", "valid", "until", "delivery", "delivered", "deliver", "print", "printed",
    "ship", "shipped", "shipping", "check in", "check out", "arrival", "departure", "period", "from", "to",
    "start", "end", "paid on", "order", "échéance", "echeance", "livraison", "période", "periode", "du", "au",
    "fällig", "faellig", "liefer", "lieferdatum", "leistung", "leverdatum", "vervaldatum", "levering", "periode",
    "vencimiento", "entrega", "scadenza", "consegna", "zahlbar", "bis", "tot",
)  # fmt: skip


def _other_date_words(text: str) -> bool:
    from invoice_vlm.backends.ocr.layout import _norm

    words = f" {_norm(text)} "
    return any(f" {w} " in words for w in _OTHER_DATES)


def issue_date_box(page: _Page) -> tuple[Box, str] | None:
    """The box of the issue date when no label named it: the highest dated line that no other date word heads."""
    fallback: tuple[Box, str] | None = None
    for row in page.rows:
        for i, box in enumerate(row):
            if box.used:
                continue
            found = find_date(box.text)
            if found is None:
                continue
            before = " ".join(b.text for b in row[:i]) + " " + box.text[: box.text.find(found[0])]
            if _other_date_words(before):
                fallback = fallback or (box, found[0])
                continue
            return box, found[0]
    return fallback


# --- amounts ----------------------------------------------------------------------------------------------------

_AMOUNT = re.compile(
    r"(?<![\d.,])[-\u2212(]?\s?\d{1,3}(?:[.,' \u2019]\d{3})*[.,]\d{2}(?![\d%])\)?-?|(?<![\d.,])[-\u2212(]?\d+[.,]\d{2}(?![\d%])\)?-?"
)


@dataclass
class Amount:
    """An amount printed on the page, with the words of its row before it and where it stands."""

    value: Decimal
    text: str
    label: str
    box: Box
    row: int
    size: float
    category: str = ""


_INCL = (
    "incl",
    "including",
    "inclusive",
    "inc",
    "inkl",
    "ttc",
    "tvac",
    "incl btw",
    "con iva",
    "iva incluido",
    "ivato",
)
_EXCL = ("excl", "excluding", "exclusive", "exkl", "ht", "hors taxe", "before tax", "pre tax", "netto", "net",
         "zonder", "sin iva", "without", "nett", "excl btw")  # fmt: skip
_ROUNDING = ("rounding", "round", "rounded", "rounding adj", "rounding adjustment", "arrondi", "rundung", "afronding",
             "redondeo", "arrotondamento", "adj")  # fmt: skip
_CASH = ("cash", "tendered", "cash tendered", "paid", "payment", "bar", "bargeld", "gegeben", "espèces", "especes",
         "contant", "efectivo", "contanti", "received", "visa", "mastercard", "card", "credit card", "debit", "eftpos")  # fmt: skip
_CHANGE = ("change", "change due", "rendu", "monnaie", "rendu monnaie", "rückgeld", "ruckgeld", "wechselgeld", "retour",
           "wisselgeld", "cambio", "vuelto", "resto")  # fmt: skip
_SERVICE = ("service", "service charge", "svc", "svc chg", "serv chg", "tip", "gratuity", "pourboire", "trinkgeld",
            "fooi", "propina", "servizio", "coperto", "delivery fee", "shipping", "frais de port", "versand", "verzending")  # fmt: skip
_DISCOUNT = ("discount", "remise", "rabatt", "korting", "descuento", "sconto", "promo", "voucher", "coupon")
_NOT_AMOUNTS = ("qty", "quantity", "items", "item", "pcs", "no of items", "total qty", "total items", "count")
_GRAND = ("grand", "amount due", "due", "payable", "to pay", "balance", "net à payer", "net a payer", "zu zahlen",
          "te betalen", "te voldoen", "a pagar", "da pagare", "à payer", "a payer", "endbetrag", "total due")  # fmt: skip


def _has(text: str, words: tuple[str, ...]) -> bool:
    padded = f" {text} "
    return any(f" {w} " in padded for w in words)


def _label_score(text: str, labels: tuple[str, ...]) -> float:
    """How well the row's words name a field: the best label found whole in them, or spelt closely as them."""
    from invoice_vlm.backends.ocr.layout import _label_forms

    padded = f" {text} "
    best = 0.0
    for label in _label_forms(labels):
        if f" {label} " in padded:
            best = max(best, 1.0 + 0.01 * len(label))
        elif len(label) > 3 and similarity(text, label) >= 0.8:
            best = max(best, similarity(text, label))
    return best


def gather_amounts(page: _Page) -> list[Amount]:
    """Every amount with two decimals on the page that no table took, with its row's words before it."""
    from invoice_vlm.backends.ocr.layout import _norm
    from invoice_vlm.normalize import normalize_amount

    out: list[Amount] = []
    for index, row in enumerate(page.rows):
        words: list[str] = []
        for box in row:
            text = box.text
            matches = list(_AMOUNT.finditer(text)) if not box.used else []
            if matches and find_date(text) is None:
                m = matches[-1]
                value, _ = normalize_amount(m.group().replace("\u2212", "-"))
                if value is not None:
                    label = _norm(" ".join([*words, text[: m.start()]]))
                    out.append(Amount(value, text, label, box, index, box.height))
            words.append(text)
    return out


def _categorise(amounts: list[Amount], obj: ObjectNode, payable: LeafField) -> dict[str, LeafField]:
    parts = {f.key: f for f in obj.fields if f.adds_to == payable.key and f.numeric}
    for a in amounts:
        text = a.label
        if not text:
            a.category = "bare"
        elif _has(text, _NOT_AMOUNTS) and not _has(text, ("amount", "total amount")):
            a.category = "count"
        elif _has(text, _CHANGE):
            a.category = "change"
        elif _has(text, _ROUNDING) and abs(a.value) < 1 and not _has(text, ("total",)):
            a.category = "rounding"
        elif _has(text, _INCL) or _has(text, _GRAND) or (_has(text, _ROUNDING) and _has(text, ("total",))):
            a.category = "total"
        elif _has(text, _CASH):
            a.category = "cash"
        elif _has(text, _DISCOUNT):
            a.category = "discount"
        elif _has(text, _SERVICE):
            a.category = "service"
        else:
            scores = {key: _label_score(text, leaf.labels) for key, leaf in parts.items()}
            scores[payable.key] = _label_score(text, payable.labels)
            best = max(scores, key=lambda k: scores[k])
            if scores[best] <= 0:
                a.category = "other"
            elif best == payable.key and _has(text, _EXCL):
                a.category = "subtotal"
            else:
                a.category = "total" if best == payable.key else best
    return parts


def _near(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) <= Decimal("0.005")


def _part(option: tuple[Decimal, list[Amount] | None]) -> Amount | Decimal | None:
    """What fills a part: its printed amount, the sum of several printed ones, or nothing (not printed here)."""
    value, found = option
    if not found:
        return None
    return found[0] if len(found) == 1 else value


@dataclass
class PayableChoice:
    """The amount payable chosen among the page's amounts, the parts that add up to it, and the choice's margin."""

    total: Amount
    parts: dict[str, Amount | Decimal | None]
    confidence: float
    unsupported: list[tuple[str, Amount]]


def read_payable(
    page: _Page, obj: ObjectNode, lines_sum: Decimal | None, known: dict[str, Decimal]
) -> PayableChoice | None:
    """The amount payable by evidence (see the module docstring), or ``None`` when the page prints no amount.

    ``lines_sum`` is the sum of the item lines a part adds up (``sum_of``); ``known`` holds parts already read (a
    table's footer row).
    """
    payable = next((f for f in obj.fields if f.role == "payable"), None)
    if payable is None:
        return None
    amounts = gather_amounts(page)
    if not amounts:
        return None
    parts = _categorise(amounts, obj, payable)
    by = {c: [a for a in amounts if a.category == c] for c in {a.category for a in amounts}}
    part_keys = [k for k in parts if by.get(k) or k in known or (parts[k].sum_of and lines_sum is not None)]
    # Amounts that may stand between the parts and the total; only a rounding line leaves the parts fit to fill
    # their fields (the schema has no field for a service charge, so subtotal + tax would not add up to the total).
    extras = [(a.value, "service") for a in by.get("service", [])]
    extras += [(a.value, "rounding") for a in by.get("rounding", [])]
    extras += [(-abs(a.value), "discount") for a in by.get("discount", [])]
    sizes = statistics.median(a.size for a in amounts)

    def options(key: str) -> list[tuple[Decimal, list[Amount]]]:
        found = by.get(key, [])
        out = [(a.value, [a]) for a in found]
        if len(found) > 1:  # several tax rates (CGST + SGST, 9% and 21%): their sum is the tax
            total = sum((a.value for a in found), Decimal(0))
            if not any(
                _near(total - a.value, a.value) for a in found
            ):  # unless one line is already their sum
                out.append((total, list(found)))
        if key in known:
            out.append((known[key], []))
        if parts[key].sum_of and lines_sum is not None:
            out.append((lines_sum, []))
        return out

    def support(value: Decimal) -> tuple[float, dict[str, Amount | Decimal | None]]:
        best: tuple[float, dict[str, Amount | Decimal | None]] = (0.0, {})
        groups = [options(k) for k in part_keys]
        none: tuple[Decimal, list[Amount] | None] = (Decimal(0), None)  # the part left out
        for chosen in itertools.product(*[[none, *g] for g in groups]):
            picked = {k: c for k, c in zip(part_keys, chosen, strict=True) if c[1] is not None}
            if not picked:
                continue
            printed = sum(1 for c in picked.values() if c[1])
            base = sum((c[0] * parts[k].sign for k, c in picked.items()), Decimal(0))
            for size in range(len(extras) + 1):
                for combo in itertools.combinations(extras, size):
                    if not _near(base + sum((v for v, _ in combo), Decimal(0)), value):
                        continue
                    # printed parts that add up settle it; the lines' sum alone only supports it
                    score = (3.0 + 0.5 * len(picked) + 0.25 * size) if printed else 2.0
                    fill = all(kind == "rounding" for _, kind in combo)
                    if score > best[0]:
                        best = (score, {k: _part(c) for k, c in picked.items()} if fill else {})
        for cash in by.get("cash", []):
            for change in by.get("change", []):
                if _near(cash.value - change.value, value):
                    best = (best[0] + 2.0, best[1])
        return best

    candidates = by.get("total", [])
    pool = candidates or [a for a in amounts if a.category in ("bare", "other", "cash")]
    if not pool:
        return None
    scored: list[tuple[float, Amount, dict[str, Amount | Decimal | None]]] = []
    lowest = max(a.row for a in pool)
    biggest = max(a.value for a in pool)
    for a in pool:
        score, used = support(a.value)
        if a.category == "total":
            score += 1.0 + (0.5 if _has(a.label, _INCL) or _has(a.label, _GRAND) else 0.0)
        if a.size > 1.15 * sizes:
            score += 0.4
        if a.value == biggest:
            score += 0.3
        if a.row == lowest:
            score += 0.3
        if a.value <= 0:
            score -= 5
        scored.append((score, a, used))
    scored.sort(key=lambda s: -s[0])
    best_score, best, used = scored[0]
    rival = next((s for s, a, _ in scored[1:] if not _near(a.value, best.value)), None)
    margin = best_score - (rival if rival is not None else 0.0)
    # The page's arithmetic settles it; else the margin over the best rival of another value says how sure it is.
    sure = best_score >= 3.0 or rival is None
    confidence = best.box.score * (1.0 if sure else min(0.95, 0.55 + 0.15 * margin))
    taken = {id(v) for v in used.values() if isinstance(v, Amount)}
    unsupported = [
        (k, a)
        for k in parts
        for a in by.get(k, [])
        if id(a) not in taken and not any(isinstance(v, Decimal) for kk, v in used.items() if kk == k)
    ]
    return PayableChoice(best, used, confidence, unsupported)


# --- the issuer's letterhead ------------------------------------------------------------------------------------

_COMPANY = re.compile(
    r"\b(ltd|limited|llc|inc|corp|co|company|gmbh|ag|kg|ohg|ug|bv|b\.v|nv|n\.v|sa|s\.a|sarl|sas|srl|s\.r\.l|spa|"
    r"s\.p\.a|sl|s\.l|plc|pty|sdn|bhd|pte|llp|lp|oy|ab|as|aps|kft|sp\. z o\.o|enterprise|trading|restaurant|"
    r"café|cafe|hotel|hôtel|store|shop|market|mart|supermarket|bakery|pharmacy|boutique)\b\.?",
    re.IGNORECASE,
)
_CONTACT = re.compile(
    r"(\b(tel|phone|ph|fax|mobile|mob|hp|telp|téléphone|telefon|telefoon|tél|email|e-mail|mail|web|www|http|"
    r"gst|gstin|vat|tva|btw|ust|mwst|siret|siren|kvk|iban|bic|abn|tin|ein|reg|company no|co reg|roc|"
    r"nif|cif|p\.? ?iva|rcs|hrb)\b|@)",
    re.IGNORECASE,
)
_PHONE = re.compile(r"\+\d|\(\d{2,4}\)\s?\d|(?:\d[\s./-]?){8,}")
_TITLES = ("invoice", "tax invoice", "simplified tax invoice", "receipt", "official receipt", "cash sale",
           "cash receipt", "sales receipt", "bill", "tax receipt", "credit note", "statement", "quotation", "facture",
           "reçu", "recu", "ticket", "note", "rechnung", "quittung", "kassenbon", "beleg", "factuur", "kassabon",
           "bon", "factura", "recibo", "ticket de compra", "fattura", "ricevuta", "scontrino", "copy", "duplicate",
           "original", "customer copy", "welcome", "thank you")  # fmt: skip
_CODE_LINE = re.compile(r"^\(\s*[\w./-]*\d[\w./-]*\s*\)$")  # "(861786-D)"


def _line_text(boxes: list[Box]) -> str:
    return " ".join(b.text.strip() for b in boxes)


def _is_title(text: str) -> bool:
    from invoice_vlm.backends.ocr.layout import _norm

    norm = _norm(text)
    return any(similarity(norm, t) >= 0.85 for t in _TITLES)


@dataclass
class Letterhead:
    """The issuer read from the top of the page: name, address lines, a tax id line, and the boxes they came from."""

    name: list[Box]
    address: list[list[Box]]
    contact: list[list[Box]]
    confidence: float


def read_letterhead(page: _Page, stops: list[tuple[str, tuple[str, ...]]]) -> Letterhead | None:
    """The letterhead block at the top of the page, up to the first labelled line, date or table row.

    ``stops`` are the label candidates of every field and section of the document (a line they label ends the
    block).
    """
    from invoice_vlm.backends.ocr.layout import _match_label

    lines: list[list[Box]] = []
    anchor: Box | None = None
    for row in page.rows:
        boxes = [b for b in row if not b.used and not _is_title(b.text)]
        if (
            anchor is None and boxes
        ):  # the first line: its first box and what runs on from it, not the far column
            run = [boxes[0]]
            for b in boxes[1:]:
                if b.x0 - run[-1].x1 > 2 * page.line_height:
                    break
                run.append(b)
            boxes = run
        elif anchor is not None:  # the letterhead is one column: what is printed beside it is another block
            boxes = [
                b
                for b in boxes
                if abs(b.x0 - anchor.x0) <= 3 * page.line_height
                or abs(b.cx - anchor.cx) <= 3 * page.line_height
            ]
        if not boxes:
            if lines and any(b.used for b in row) and any(b.x0 <= anchor.cx <= b.x1 for b in row if anchor):
                break  # a row a table or section took under the letterhead: it is over
            continue
        if lines and boxes[0].cy - lines[-1][0].cy > 3.5 * page.line_height:
            break  # a gap: the next block
        text = _line_text(boxes)
        label = _match_label(text, stops) if not _CONTACT.search(text) else None
        if find_date(text) is not None or (label is not None and (":" in text or label[2] >= 1.0)):
            break  # a labelled line ("Invoice No 123", "Date: ..."): the letterhead is over
        if len(boxes) >= 3 and all(any(c.isdigit() for c in b.text) for b in boxes[1:]):
            break  # a table row
        if anchor is None:
            anchor = boxes[0]
        lines.append(boxes)
        if len(lines) >= 8:
            break
    lines = [ln for ln in lines if any(c.isalpha() for c in _line_text(ln))]
    if not lines:
        return None
    head = lines[:3]
    named = [ln for ln in head if _COMPANY.search(_line_text(ln)) and not _CONTACT.search(_line_text(ln))]
    tallest = max(head, key=lambda ln: max(b.height for b in ln))
    if named:
        name, confidence = named[0], 0.9
    elif max(b.height for b in tallest) > 1.15 * page.line_height:
        name, confidence = tallest, 0.8
    else:
        name, confidence = head[0], 0.6
    start = lines.index(name)
    address: list[list[Box]] = []
    contact: list[list[Box]] = []
    for ln in lines[start + 1 :]:
        text = _line_text(ln)
        if _CONTACT.search(text) or _PHONE.search(text):
            contact.append(ln)
            continue
        if contact:
            break  # the address is over once the phone and tax lines start
        if _CODE_LINE.match(text.replace(" ", "")) and len(text) <= 20:
            continue  # a company registration number printed under the name: "(861786-D)"
        address.append(ln)
    return Letterhead(name, address, contact, confidence)


_SEPARATOR = re.compile(r"\s*[\u00b7\u2022|\u2219]\s*")


def join_address(lines: list[list[Box]]) -> str:
    """Address lines on one line, joined with ", ".

    A line that already ends with a comma takes a space; the dots and bars a letterhead prints between its parts
    (``Lindenweg 4 · 80331 München``) become commas too.
    """
    out = ""
    for ln in lines:
        text = _SEPARATOR.sub(", ", _line_text(ln).strip())
        if not out:
            out = text
        else:
            out = f"{out} {text}" if out.endswith(",") else f"{out}, {text}"
    return out


# --- currency from context --------------------------------------------------------------------------------------

_LOCAL_SIGNS = {"rm": "MYR", "rs": "INR", "rs.": "INR", "inr": "INR", "s$": "SGD", "sgd": "SGD", "a$": "AUD",
                "hk$": "HKD", "c$": "CAD", "nz$": "NZD", "r$": "BRL"}  # fmt: skip
_AREA_WORDS = {"btw": "EUR", "tva": "EUR", "tvac": "EUR", "mwst": "EUR", "ust": "EUR", "iva": "EUR",
               "cgst": "INR", "sgst": "INR", "igst": "INR", "gstin": "INR"}  # fmt: skip


def context_currency(boxes: list[Box]) -> tuple[str, float] | None:
    """A currency named by the page's context when no symbol is printed.

    A local sign before amounts (``RM 9.90``) first, else tax words that belong to one currency area; ``None`` when
    nothing (or more than one) supports one.
    """
    from invoice_vlm.backends.ocr.layout import _norm

    signs: dict[str, float] = {}
    areas: dict[str, float] = {}
    for b in boxes:
        lowered = b.text.lower()
        for m in re.finditer(r"(?<![a-z$])(rm|rs\.?|inr|s\$|sgd|a\$|hk\$|c\$|nz\$|r\$)\s?(?=\d)", lowered):
            signs.setdefault(_LOCAL_SIGNS[m.group(1)], b.score)
        for m in re.finditer(r"(?<![a-z])(rm|rs)(?![a-z])", lowered):  # "Amount (RM)", "Rs 120"
            signs.setdefault(_LOCAL_SIGNS[m.group(1)], b.score)
        for word in _norm(b.text).split():
            if word in _AREA_WORDS:
                areas.setdefault(_AREA_WORDS[word], b.score)
    if "chf" in " ".join(_norm(b.text) for b in boxes).split():
        areas.pop("EUR", None)  # Swiss pages print MwSt/TVA too
    if len(signs) == 1:
        code, score = next(iter(signs.items()))
        return code, score * 0.95
    if not signs and len(areas) == 1:
        code, score = next(iter(areas.items()))
        return code, score * 0.7
    return None
