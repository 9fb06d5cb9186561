"""Synthetic pallet labels: values in the reference formats and the layouts they are printed in."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from datetime import time as dt_time
from typing import Any

from PIL import Image

from invoice_vlm.data.synth.kit import SynthKit, Template
from invoice_vlm.data.synth.page import (
    Page,
    kv_lines,
    label,
    stacked,
    table,
    two_columns,
    typeface,
    wrap,
)
from invoice_vlm.data.synth.values import EPOCH, PRODUCT_NOUNS, one_line
from invoice_vlm.schemas import SchemaSpec

__all__ = ["SYNTH", "TEMPLATES", "sample_pallet_label"]

_PRODUCT_UNITS = ("ROLL OF", "BOX OF", "CASE OF", "PACK OF", "", "", "")


def sample_pallet_label(fake: Any, rng: random.Random) -> dict[str, Any]:
    """One pallet label's values in the reference formats, with totals that add up."""
    products = []
    for _ in range(rng.randint(1, 6)):
        cases = rng.randint(1, 80)
        unit = rng.choice(_PRODUCT_UNITS)
        products.append(
            {
                "description": f"{rng.randint(100000, 999999)} - {(unit + ' ' if unit else '')}{rng.choice(PRODUCT_NOUNS)}",
                "cases": str(cases),
                "sales_units": str(cases * rng.choice((1, 1, 2, 4, 6, 12))),
                "layers": str(rng.randint(1, 8)),
            }
        )
    delivery = EPOCH + timedelta(days=rng.randint(0, 1000))
    printed = datetime.combine(
        delivery - timedelta(days=rng.randint(0, 10)), dt_time(rng.randint(5, 20), rng.randint(0, 59))
    )
    pages = rng.choice((1, 1, 1, 2, 3))
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"
    return {
        "route": f"{rng.choice(letters)}{rng.randint(100, 999)}-{rng.choice(letters)}{rng.choice(letters)}-{rng.randint(100, 999)}",
        "pallet_number": str(rng.randint(1, 30)),
        "delivery_date": f"{delivery.month}/{delivery.day}/{delivery.year}",
        "load": str(rng.randint(1, 9999)),
        "dock": str(rng.randint(1, 48)),
        "shipment_id": "P" + "".join(str(rng.randint(0, 9)) for _ in range(11)),
        "destination": f"{fake.company()}, {one_line(fake.address())}",
        "asn_number": str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(9)),
        "salesman": fake.name(),
        "products": products,
        "total_cases": str(sum(int(p["cases"]) for p in products)),
        "total_units": str(sum(int(p["sales_units"]) for p in products)),
        "total_layers": str(sum(int(p["layers"]) for p in products)),
        "printed_date": printed.strftime("%m/%d/%Y %H:%M"),
        "page_number": f"{rng.randint(1, pages)} of {pages}",
    }


def _pallet_header_pairs(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    keys = [
        "route",
        "pallet_number",
        "delivery_date",
        "load",
        "dock",
        "shipment_id",
        "asn_number",
        "salesman",
    ]
    return [(label(spec, k, rng), data[k]) for k in keys]


def _pallet_rows(data: dict[str, Any]) -> list[list[str]]:
    return [[p["description"], p["cases"], p["sales_units"], p["layers"]] for p in data["products"]]


def _pallet_headers(spec: SchemaSpec, rng: random.Random) -> list[str]:
    return [label(spec, f"products.{k}", rng) for k in ("description", "cases", "sales_units", "layers")]


def _pallet_totals(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    return [(label(spec, k, rng), data[k]) for k in ("total_cases", "total_units", "total_layers")]


def _pallet_footer(page: Page, spec: SchemaSpec, data: dict[str, Any], rng: random.Random, size: int) -> None:
    page.skip(8)
    page.text(page.margin, f"{label(spec, 'printed_date', rng)}: {data['printed_date']}", size)
    page.right(page.width - page.margin, f"{label(spec, 'page_number', rng)}: {data['page_number']}", size)
    page.skip(int(size * 1.6))


def _pallet_keyvalue(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = Page()
    page.text(page.margin, rng.choice(("PALLET LABEL", "LOAD MANIFEST", "PALLET MANIFEST")), 36, bold=True)
    page.skip(60)
    pairs = _pallet_header_pairs(spec, data, rng)
    pairs.insert(6, (label(spec, "destination", rng), data["destination"]))
    kv_lines(page, pairs, 22)
    page.skip(10)
    table(page, _pallet_headers(spec, rng), _pallet_rows(data), (0.58, 0.12, 0.18, 0.12), 20, lines=False)
    page.skip(6)
    kv_lines(page, _pallet_totals(spec, data, rng), 22)
    _pallet_footer(page, spec, data, rng, 18)
    return page.finish()


def _pallet_two_column(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = Page()
    title = rng.choice(("PALLET LABEL", "SHIPPING MANIFEST"))
    page.text(page.margin, title, 34, bold=True)
    page.right(
        page.width - page.margin,
        f"{label(spec, 'page_number', rng)}: {data['page_number']}",
        20,
        y=page.y + 8,
    )
    page.skip(56)
    page.rule(3)
    two_columns(page, _pallet_header_pairs(spec, data, rng), 21)
    kv_lines(page, [(label(spec, "destination", rng), data["destination"])], 21)
    page.skip(10)
    table(page, _pallet_headers(spec, rng), _pallet_rows(data), (0.55, 0.13, 0.19, 0.13), 20, lines=True)
    page.skip(6)
    two_columns(page, _pallet_totals(spec, data, rng), 21)
    page.text(page.margin, f"{label(spec, 'printed_date', rng)}: {data['printed_date']}", 18)
    page.skip(36)
    return page.finish()


def _pallet_stacked(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = Page()
    page.text(page.margin, "PALLET", 40, bold=True)
    page.right(page.width - page.margin, data["shipment_id"], 30, y=page.y + 6)
    page.skip(66)
    pairs = _pallet_header_pairs(spec, data, rng)
    stacked(page, pairs, 22)
    stacked(page, [(label(spec, "destination", rng), data["destination"])], 20, per_row=1)
    page.skip(8)
    table(page, _pallet_headers(spec, rng), _pallet_rows(data), (0.52, 0.15, 0.18, 0.15), 20, lines=True)
    page.skip(8)
    stacked(page, _pallet_totals(spec, data, rng), 22)
    _pallet_footer(page, spec, data, rng, 18)
    return page.finish()


def _pallet_footer_totals(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    """Label/value pairs without colons in two columns, the totals as the last row of the table."""
    family, condense = typeface(rng)
    page = Page(width=900, family=family, condense=condense)
    page.text(page.margin, rng.choice(("LOAD TAG", "PALLET TAG", "PICK LABEL")), 30, bold=True)
    page.skip(56)
    pairs = [(key.upper(), value) for key, value in _pallet_header_pairs(spec, data, rng)]
    destination = label(spec, "destination", rng).upper()
    indent = max(page.length(key, 18) for key, _ in [*pairs, (destination, "")]) + 24
    half = (page.width - 2 * page.margin) // 2
    for row in range(0, len(pairs), 2):
        for col, (key, value) in enumerate(pairs[row : row + 2]):
            x = page.margin + col * (half + 10)
            page.text(x, key, 18)
            page.text(x + indent, value, 18)
        page.skip(32)
    page.text(page.margin, destination, 18)
    for line in wrap(page, data["destination"], 18, page.width - 2 * page.margin - indent):
        page.text(page.margin + indent, line, 18)
        page.skip(28)
    page.skip(14)
    rows = [
        *_pallet_rows(data),
        [label(spec, "footer", rng), data["total_cases"], data["total_units"], data["total_layers"]],
    ]
    table(page, _pallet_headers(spec, rng), rows, (0.58, 0.12, 0.18, 0.12), 18, lines=False)
    _pallet_footer(page, spec, data, rng, 16)
    return page.finish()


TEMPLATES: dict[str, Template] = {
    "keyvalue": _pallet_keyvalue,
    "two_column": _pallet_two_column,
    "stacked": _pallet_stacked,
    "footer_totals": _pallet_footer_totals,
}

SYNTH = SynthKit(sample_pallet_label, TEMPLATES)
"""Registered under the schema's name through the ``invoice_vlm.synth`` entry point."""
