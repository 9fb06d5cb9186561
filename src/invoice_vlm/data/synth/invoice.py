"""Synthetic invoices and receipts: values, layouts in four languages, and two-page invoices for PDFs."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

from PIL import Image

from invoice_vlm.data.synth.kit import SynthKit, Template
from invoice_vlm.data.synth.page import (
    A4,
    Command,
    Page,
    kv_lines,
    label,
    money,
    printed_amount,
    printed_date,
    qty,
    stacked,
    table,
    two_columns,
    typeface,
    wrap,
)
from invoice_vlm.data.synth.values import EPOCH, PRODUCT_NOUNS, one_line
from invoice_vlm.schemas import SchemaSpec

__all__ = ["SYNTH", "TEMPLATES", "sample_invoice", "two_page_invoice"]

_SERVICES = (
    "Consulting hours",
    "Software license",
    "Annual support plan",
    "Freight charge",
    "Installation service",
    "Warehouse storage",
    "Pallet wrap",
    "Custom labels",
    "Express delivery",
    "Maintenance visit",
    "Spare parts kit",
)


def sample_invoice(fake: Any, rng: random.Random) -> dict[str, Any]:
    """One invoice's values: parties, line items whose amounts add up, tax, due date."""
    items: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 6)):
        quantity = float(rng.randint(1, 40))
        unit_price = round(rng.uniform(2, 900), 2)
        items.append(
            {
                "description": rng.choice(_SERVICES)
                if rng.random() < 0.5
                else rng.choice(PRODUCT_NOUNS).title(),
                "quantity": quantity,
                "unit_price": unit_price,
                "amount": round(quantity * unit_price, 2),
            }
        )
    subtotal = round(sum(i["amount"] for i in items), 2)
    rate = rng.choice((0.0, 0.05, 0.07, 0.1, 0.19, 0.2))
    tax = round(subtotal * rate, 2)
    issued = EPOCH + timedelta(days=rng.randint(0, 1000))
    due = issued + timedelta(days=rng.choice((14, 30, 45, 60)))

    def party(with_tax: bool) -> dict[str, Any]:
        return {
            "name": fake.company(),
            "address": one_line(fake.address()),
            "tax_id": f"{rng.choice(('US', 'DE', 'GB', 'FR'))}{rng.randint(10**8, 10**9 - 1)}"
            if with_tax
            else None,
        }

    return {
        "invoice_number": f"{rng.choice(('INV', 'IN', 'F'))}-{issued.year}-{rng.randint(1, 99999):05d}",
        "invoice_date": issued.isoformat(),
        "due_date": due.isoformat() if rng.random() < 0.8 else None,
        "seller": party(True),
        "buyer": party(rng.random() < 0.5),
        "currency": rng.choice(("USD", "EUR", "GBP", "CHF")),
        "line_items": items,
        "subtotal": subtotal,
        "tax": tax,
        "total": round(subtotal + tax, 2),
    }


def _party_lines(spec: SchemaSpec, party: dict[str, Any], who: str, rng: random.Random) -> list[str]:
    lines = [party["name"], party["address"]]
    if party.get("tax_id"):
        lines.append(f"{label(spec, f'{who}.tax_id', rng)}: {party['tax_id']}")
    return lines


def _invoice_rows(data: dict[str, Any]) -> list[list[str]]:
    return [
        [i["description"], qty(i["quantity"]), money(i["unit_price"]), money(i["amount"])]
        for i in data["line_items"]
    ]


def _invoice_headers(spec: SchemaSpec, rng: random.Random) -> list[str]:
    return [label(spec, f"line_items.{k}", rng) for k in ("description", "quantity", "unit_price", "amount")]


def _invoice_meta(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    pairs = [
        (label(spec, "invoice_number", rng), data["invoice_number"]),
        (label(spec, "invoice_date", rng), data["invoice_date"]),
    ]
    if data["due_date"]:
        pairs.append((label(spec, "due_date", rng), data["due_date"]))
    pairs.append((label(spec, "currency", rng), data["currency"]))
    return pairs


def _invoice_totals(
    page: Page, spec: SchemaSpec, data: dict[str, Any], rng: random.Random, size: int
) -> None:
    x_label = page.width - page.margin - 330
    for key in ("subtotal", "tax", "total"):
        page.text(x_label, f"{label(spec, key, rng)}:", size, bold=key == "total")
        page.right(page.width - page.margin, money(data[key]), size)
        page.skip(int(size * 1.55))


def _invoice_blocks(
    page: Page, spec: SchemaSpec, data: dict[str, Any], rng: random.Random, size: int
) -> None:
    half = (page.width - 2 * page.margin) // 2
    top = page.y
    for col, (who, title) in enumerate(
        (("seller", rng.choice(("From", "Seller"))), ("buyer", rng.choice(("Bill To", "Buyer"))))
    ):
        x = page.margin + col * (half + 12)
        page.text(x, title.upper(), size - 2, bold=True, y=top)
        y = top + int(size * 1.5)
        for text in _party_lines(spec, data[who], who, rng):
            for line in wrap(page, text, size, half - 40):  # leave a gutter between the two blocks
                page.text(x, line, size, y=y)
                y += int(size * 1.35)
        page.y = max(page.y, y)
    page.skip(20)


def _invoice_classic(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = Page()
    page.text(page.margin, "INVOICE", 40, bold=True)
    page.skip(70)
    kv_lines(page, _invoice_meta(spec, data, rng), 20)
    page.skip(10)
    _invoice_blocks(page, spec, data, rng, 20)
    table(page, _invoice_headers(spec, rng), _invoice_rows(data), (0.5, 0.12, 0.19, 0.19), 19, lines=False)
    page.skip(6)
    _invoice_totals(page, spec, data, rng, 21)
    return page.finish()


def _invoice_two_column(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = Page()
    _invoice_blocks(page, spec, data, rng, 19)
    page.rule(3)
    page.text(page.margin, rng.choice(("Invoice", "INVOICE", "Tax Invoice")), 34, bold=True)
    page.skip(56)
    two_columns(page, _invoice_meta(spec, data, rng), 20)
    page.skip(6)
    table(page, _invoice_headers(spec, rng), _invoice_rows(data), (0.46, 0.14, 0.2, 0.2), 19, lines=True)
    page.skip(6)
    _invoice_totals(page, spec, data, rng, 20)
    return page.finish()


def _invoice_stacked(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = Page()
    page.text(page.margin, "INVOICE", 38, bold=True)
    page.skip(64)
    stacked(page, _invoice_meta(spec, data, rng), 20, per_row=4 if data["due_date"] else 3)
    page.skip(8)
    _invoice_blocks(page, spec, data, rng, 19)
    table(page, _invoice_headers(spec, rng), _invoice_rows(data), (0.5, 0.12, 0.19, 0.19), 19, lines=True)
    page.skip(6)
    _invoice_totals(page, spec, data, rng, 20)
    return page.finish()


def _invoice_language(data: dict[str, Any], rng: random.Random) -> tuple[str, str]:
    """A language and the currency it bills in: EUR for German, French and Dutch pages."""
    lang = rng.choice(("de", "fr", "nl", "en"))
    currency = "EUR" if lang != "en" else data["currency"]
    return lang, currency


def _invoice_european(
    spec: SchemaSpec, data: dict[str, Any], rng: random.Random
) -> tuple[Image.Image, dict[str, Any]]:
    """An invoice in German, French, Dutch or English, in the language's dates and number formats.

    The currency shows only beside the amounts, and the header fields print their label above the value.
    """
    lang, currency = _invoice_language(data, rng)
    data = {**data, "currency": currency}
    family, condense = typeface(rng)
    page = Page(family=family, condense=condense)
    page.text(page.margin, data["seller"]["name"], 26, bold=True)
    page.skip(38)
    page.text(page.margin, data["seller"]["address"][:70], 15)
    page.skip(44)
    page.text(page.margin, label(spec, "title", rng, lang), 30, bold=True)
    page.skip(56)
    meta = [
        ("invoice_number", data["invoice_number"]),
        ("invoice_date", printed_date(data["invoice_date"], lang, currency, rng)),
    ]
    if data["due_date"]:
        meta.append(("due_date", printed_date(data["due_date"], lang, currency, rng)))
    cell = (page.width - 2 * page.margin) // 3
    for col, (path, value) in enumerate(meta):
        page.text(page.margin + col * cell, label(spec, path, rng, lang), 15, bold=True, y=page.y)
        page.text(page.margin + col * cell, value, 19, y=page.y + 24)
    page.skip(74)
    page.text(page.margin, label(spec, "buyer", rng, lang), 16, bold=True)
    page.skip(26)
    for line in (data["buyer"]["name"], data["buyer"]["address"]):
        for part in wrap(page, line, 18, page.width - 2 * page.margin):
            page.text(page.margin, part, 18)
            page.skip(26)
    page.skip(20)
    headers = [
        label(spec, f"line_items.{k}", rng, lang) for k in ("description", "quantity", "unit_price", "amount")
    ]
    rows = [
        [i["description"], qty(i["quantity"]), printed_amount(i["unit_price"], lang, currency, rng, False),
         printed_amount(i["amount"], lang, currency, rng, False)]
        for i in data["line_items"]
    ]  # fmt: skip
    table(page, headers, rows, (0.48, 0.12, 0.2, 0.2), 18, lines=rng.random() < 0.5)
    page.skip(8)
    x_label = page.width - page.margin - 340
    for key in ("subtotal", "tax", "total"):
        page.text(x_label, label(spec, key, rng, lang), 19, bold=key == "total")
        page.right(
            page.width - page.margin, printed_amount(data[key], lang, currency, rng), 19, bold=key == "total"
        )
        page.skip(32)
    buyer = {k: v for k, v in data["buyer"].items() if k != "tax_id"}
    seller = {
        "name": data["seller"]["name"],
        "address": data["seller"]["address"][:70].strip(),
        "tax_id": None,
    }
    return page.finish(), {**data, "seller": seller, "buyer": {**buyer, "tax_id": None}}


def _invoice_receipt(
    spec: SchemaSpec, data: dict[str, Any], rng: random.Random
) -> tuple[Image.Image, dict[str, Any]]:
    """A till receipt: a shop name, a receipt number, a date, the amount paid; no buyer, no lines, no tax."""
    lang, currency = _invoice_language(data, rng)
    family, condense = typeface(rng)
    page = Page(width=620, family=family, condense=condense)
    page.text(page.margin, data["seller"]["name"][:28].upper(), 24, bold=True)
    page.skip(40)
    page.text(page.margin, data["seller"]["address"][:44], 14)
    page.skip(40)
    page.text(page.margin, label(spec, "receipt", rng, lang), 20, bold=True)
    page.skip(40)
    page.text(page.margin, f"{label(spec, 'receipt_number', rng, lang)} {data['invoice_number']}", 18)
    page.skip(30)
    page.text(page.margin, printed_date(data["invoice_date"], lang, currency, rng), 18)
    page.skip(40)
    page.rule(1)
    page.skip(20)
    page.text(page.margin, label(spec, "total", rng, lang).upper(), 22, bold=True)
    page.right(page.width - page.margin, printed_amount(data["total"], lang, currency, rng), 22, bold=True)
    page.skip(60)
    truth = {
        "invoice_number": data["invoice_number"],
        "invoice_date": data["invoice_date"],
        "due_date": None,
        "seller": {
            "name": data["seller"]["name"][:28].upper().strip(),
            "address": data["seller"]["address"][:44].strip(),
            "tax_id": None,
        },
        "buyer": None,
        "currency": currency,
        "line_items": None,
        "subtotal": None,
        "tax": None,
        "total": data["total"],
    }
    return page.finish(), truth


def two_page_invoice(
    spec: SchemaSpec, data: dict[str, Any], rng: random.Random
) -> tuple[list[list[Command]], dict[str, Any]]:
    """An invoice whose line items run onto a second page, with the totals on the last; text commands per page."""
    lang = rng.choice(("en", "de"))
    currency = data["currency"] if lang == "en" else "EUR"
    data = {**data, "currency": currency, "seller": {**data["seller"], "tax_id": None}}
    items = data["line_items"]
    while len(items) < 4:  # enough lines to need a second page
        extra = dict(items[-1], description=rng.choice(_SERVICES))
        items = [*items, extra]
    subtotal = round(sum(i["amount"] for i in items), 2)
    tax = round(subtotal * rng.choice((0.0, 0.07, 0.19, 0.2)), 2)
    data = {**data, "line_items": items, "subtotal": subtotal, "tax": tax, "total": round(subtotal + tax, 2)}
    split = len(items) // 2
    left, right = 40.0, A4[0] - 40.0

    def table_header(y: float) -> list[Command]:
        words = [
            label(spec, f"line_items.{k}", rng, lang)
            for k in ("description", "quantity", "unit_price", "amount")
        ]
        return [(left, y, words[0], 10, True, "left"), (330, y, words[1], 10, True, "right"),
                (440, y, words[2], 10, True, "right"), (right, y, words[3], 10, True, "right")]  # fmt: skip

    def rows(lines: list[dict[str, Any]], y: float) -> tuple[list[Command], float]:
        out: list[Command] = []
        for item in lines:
            out += [
                (left, y, item["description"], 10, False, "left"),
                (330, y, qty(item["quantity"]), 10, False, "right"),
                (440, y, printed_amount(item["unit_price"], lang, currency, rng, False), 10, False, "right"),
                (right, y, printed_amount(item["amount"], lang, currency, rng, False), 10, False, "right"),
            ]
            y += 18
        return out, y

    first: list[Command] = [
        (left, 40, data["seller"]["name"], 15, True, "left"),
        (left, 60, data["seller"]["address"], 8, False, "left"),
        (left, 100, label(spec, "title", rng, lang), 18, True, "left"),
    ]
    y = 140.0
    meta = [
        ("invoice_number", data["invoice_number"]),
        ("invoice_date", printed_date(data["invoice_date"], lang, currency, rng)),
    ]
    if data["due_date"]:
        meta.append(("due_date", printed_date(data["due_date"], lang, currency, rng)))
    for path, value in meta:
        first += [
            (left, y, f"{label(spec, path, rng, lang)}:", 10, True, "left"),
            (170, y, value, 10, False, "left"),
        ]
        y += 16
    y += 20
    first.append((left, y, label(spec, "buyer", rng, lang), 10, True, "left"))
    for line in (data["buyer"]["name"], data["buyer"]["address"]):
        y += 15
        first.append((left, y, line, 10, False, "left"))
    y += 40
    first += table_header(y)
    body, _ = rows(items[:split], y + 22)
    first += [*body, (right, 800, "1 / 2", 8, False, "right")]
    second = table_header(60.0)
    body, y = rows(items[split:], 82.0)
    second += body
    y += 20
    for key in ("subtotal", "tax", "total"):
        second += [(330, y, f"{label(spec, key, rng, lang)}:", 10, key == "total", "left"),
                   (right, y, printed_amount(data[key], lang, currency, rng), 10, key == "total", "right")]  # fmt: skip
        y += 18
    second.append((right, 800, "2 / 2", 8, False, "right"))
    truth = {
        **data,
        "buyer": {**data["buyer"], "tax_id": None},
    }  # the seller is the letterhead: name, address
    return [first, second], truth


TEMPLATES: dict[str, Template] = {
    "classic": _invoice_classic,
    "two_column": _invoice_two_column,
    "stacked": _invoice_stacked,
    "european": _invoice_european,
    "receipt": _invoice_receipt,
}

SYNTH = SynthKit(sample_invoice, TEMPLATES, pages=two_page_invoice)
"""Registered under the schema's name through the ``invoice_vlm.synth`` entry point."""
