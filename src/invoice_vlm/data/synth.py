"""Synthetic labelled documents: realistic values, several layouts, clean scans or phone-photo style.

Values follow the reference pallet-label formats (routes like ``V183-RZ-924``, 12-character shipment ids,
10-digit ASN numbers, ``m/d/yyyy`` delivery dates, ``mm/dd/yyyy hh:mm`` printed dates) with names and addresses
from Faker, and totals that add up. Pages are drawn with Pillow's bundled scalable font, so no system fonts are
needed. Output is the Roboflow/maestro JSONL layout (``<split>/annotations.jsonl`` beside the images) that
`invoice_vlm.data.load`, fine-tuning and other tools read.

Example:
    >>> # from invoice_vlm.data.synth import write_dataset
    >>> # write_dataset("pallet_label", n=200, out="data/pallets", seed=0, style="mixed")
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from invoice_vlm.errors import MissingDependencyError
from invoice_vlm.schemas import SchemaSpec, resolve_schema

__all__ = [
    "STYLES",
    "TEMPLATES",
    "Document",
    "font_path",
    "generate",
    "load_font",
    "render",
    "sample",
    "write_dataset",
    "write_pdf",
]

Style = Literal["clean", "photo", "rotated", "mixed"]
STYLES: tuple[str, ...] = ("clean", "photo", "rotated", "mixed")
PAGE_WIDTH = 850
_EPOCH = date(
    2023, 1, 1
)  # dates come from a fixed window, never from today: a seed gives the same data on any day

_PRODUCT_NOUNS = (
    "METAL WIRE",
    "STEEL PIPE",
    "COPPER SHEET",
    "PLASTIC CRATE",
    "PAPER TOWEL",
    "SPRING WATER",
    "ORANGE JUICE",
    "DISH SOAP",
    "OFFICE CHAIR",
    "DESK LAMP",
    "POWER CABLE",
    "HEX BOLT",
    "WOOD SCREW",
    "GLASS PANEL",
    "AIR FILTER",
    "WATER PUMP",
    "BALL VALVE",
    "PACKING TAPE",
    "SHIPPING LABEL",
    "CANNED TOMATO",
    "RICE BAG",
    "COFFEE BEAN",
    "DOG FOOD",
    "MOTOR OIL",
    "PAINT BUCKET",
    "FLOOR TILE",
    "LED BULB",
    "HAND SANITIZER",
)
_PRODUCT_UNITS = ("ROLL OF", "BOX OF", "CASE OF", "PACK OF", "", "", "")
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


@dataclass(frozen=True)
class Document:
    """One generated document: its data (valid for the schema), the image, and how it was made."""

    data: dict[str, Any]
    image: Image.Image
    template: str
    style: str


def _faker(seed: int) -> Any:
    try:
        from faker import Faker
    except ImportError:
        raise MissingDependencyError("The synthetic data generator", "data", "faker") from None
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return fake


def _one_line(address: str) -> str:
    return ", ".join(part.strip() for part in address.splitlines() if part.strip())


def _pallet_label(fake: Any, rng: random.Random) -> dict[str, Any]:
    products = []
    for _ in range(rng.randint(1, 6)):
        cases = rng.randint(1, 80)
        unit = rng.choice(_PRODUCT_UNITS)
        products.append(
            {
                "description": f"{rng.randint(100000, 999999)} - {(unit + ' ' if unit else '')}{rng.choice(_PRODUCT_NOUNS)}",
                "cases": str(cases),
                "sales_units": str(cases * rng.choice((1, 1, 2, 4, 6, 12))),
                "layers": str(rng.randint(1, 8)),
            }
        )
    delivery = _EPOCH + timedelta(days=rng.randint(0, 1000))
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
        "destination": f"{fake.company()}, {_one_line(fake.address())}",
        "asn_number": str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(9)),
        "salesman": fake.name(),
        "products": products,
        "total_cases": str(sum(int(p["cases"]) for p in products)),
        "total_units": str(sum(int(p["sales_units"]) for p in products)),
        "total_layers": str(sum(int(p["layers"]) for p in products)),
        "printed_date": printed.strftime("%m/%d/%Y %H:%M"),
        "page_number": f"{rng.randint(1, pages)} of {pages}",
    }


def _invoice(fake: Any, rng: random.Random) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    for _ in range(rng.randint(1, 6)):
        quantity = float(rng.randint(1, 40))
        unit_price = round(rng.uniform(2, 900), 2)
        items.append(
            {
                "description": rng.choice(_SERVICES)
                if rng.random() < 0.5
                else rng.choice(_PRODUCT_NOUNS).title(),
                "quantity": quantity,
                "unit_price": unit_price,
                "amount": round(quantity * unit_price, 2),
            }
        )
    subtotal = round(sum(i["amount"] for i in items), 2)
    rate = rng.choice((0.0, 0.05, 0.07, 0.1, 0.19, 0.2))
    tax = round(subtotal * rate, 2)
    issued = _EPOCH + timedelta(days=rng.randint(0, 1000))
    due = issued + timedelta(days=rng.choice((14, 30, 45, 60)))

    def party(with_tax: bool) -> dict[str, Any]:
        return {
            "name": fake.company(),
            "address": _one_line(fake.address()),
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


SAMPLERS: dict[str, Callable[[Any, random.Random], dict[str, Any]]] = {
    "pallet_label": _pallet_label,
    "invoice": _invoice,
}


def sample(schema: str | SchemaSpec, seed: int) -> dict[str, Any]:
    """One document's data for ``schema``, validated against it; the same seed gives the same data."""
    spec = resolve_schema(schema)
    if spec.name not in SAMPLERS:
        raise ValueError(
            f"No synthetic sampler for schema {spec.name!r}; available: {', '.join(sorted(SAMPLERS))}."
        )
    data = SAMPLERS[spec.name](_faker(seed), random.Random(seed))
    spec.validate_data(data)
    return data


# ---------------------------------------------------------------------------------------------------------------
# Drawing


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


_DEJAVU = {
    ("sans", False): "DejaVuSans.ttf",
    ("sans", True): "DejaVuSans-Bold.ttf",
    ("mono", False): "DejaVuSansMono.ttf",
    ("mono", True): "DejaVuSansMono-Bold.ttf",
    ("serif", False): "DejaVuSerif.ttf",
    ("serif", True): "DejaVuSerif-Bold.ttf",
}


def font_path(family: str = "sans", bold: bool = False) -> Path:
    """A DejaVu font file (``sans``, ``mono`` or ``serif``) with the glyphs invoices print (``€``, ``ä``, ``₹``).

    Pillow's built-in font covers ASCII only; DejaVu ships inside matplotlib's wheel, found without importing it.
    """
    import importlib.util

    found = importlib.util.find_spec("matplotlib")
    if found is None or not found.submodule_search_locations:
        raise MissingDependencyError("Drawing non-ASCII and monospaced pages", "data", "matplotlib")
    name = _DEJAVU.get((family, bold))
    if name is None:
        raise ValueError(f"family must be one of sans, mono, serif; got {family!r}.")
    return Path(next(iter(found.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / name


@functools.lru_cache(maxsize=64)
def load_font(size: int, family: str = "sans", bold: bool = False) -> ImageFont.FreeTypeFont:
    """A DejaVu font at ``size`` pixels (see `font_path`)."""
    return ImageFont.truetype(str(font_path(family, bold)), size)


class _Page:
    """A white page that grows downwards as lines are written.

    ``family`` is ``"default"`` (Pillow's built-in font) or a DejaVu family (``sans``, ``mono``, ``serif``);
    ``condense`` below 1 squeezes every line horizontally, as condensed typefaces print.
    """

    def __init__(
        self, width: int = PAGE_WIDTH, margin: int = 48, family: str = "default", condense: float = 1.0
    ) -> None:
        self.width = width
        self.margin = margin
        self.image = Image.new("RGB", (width, 2600), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.y = margin
        self.family = family
        self.condense = condense

    def font(self, size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return _font(size) if self.family == "default" else load_font(size, self.family, bold)

    def length(self, text: str, size: int) -> int:
        return int(self.draw.textlength(text, font=self.font(size)) * self.condense)

    def text(self, x: int, text: str, size: int, *, bold: bool = False, y: int | None = None) -> int:
        font = self.font(size, bold)
        yy = self.y if y is None else y
        stroke = 1 if bold and self.family == "default" else 0
        if self.condense == 1.0:
            self.draw.text(
                (x, yy), text, fill=(20, 20, 20), font=font, stroke_width=stroke, stroke_fill=(20, 20, 20)
            )
        else:
            wide = int(self.draw.textlength(text, font=font)) + 4
            strip = Image.new("L", (wide, int(size * 1.5)), 0)
            ImageDraw.Draw(strip).text(
                (2, 0), text, fill=255, font=font, stroke_width=stroke, stroke_fill=255
            )
            strip = strip.resize((max(1, int(wide * self.condense)), strip.height), Image.Resampling.LANCZOS)
            self.image.paste((20, 20, 20), (x, yy), strip)
        return self.length(text, size)

    def right(self, x_right: int, text: str, size: int, y: int | None = None, *, bold: bool = False) -> None:
        self.text(x_right - self.length(text, size), text, size, y=y, bold=bold)

    def rule(self, thickness: int = 2) -> None:
        self.draw.line(
            [(self.margin, self.y), (self.width - self.margin, self.y)], fill=(30, 30, 30), width=thickness
        )
        self.y += 10

    def skip(self, dy: int) -> None:
        self.y += dy

    def fits(self, text: str, size: int, width: int) -> bool:
        return self.length(text, size) <= width

    def finish(self) -> Image.Image:
        height = max(self.y + self.margin, int(self.width * 0.7))
        return self.image.crop((0, 0, self.width, height))


# The generator's own words per language: what its templates print. They are not the schema's labels (which a reader
# matches), so a template exercises the schema's synonyms instead of echoing them.
_VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "route": ("Route", "Route No."),
        "pallet_number": ("Pallet Number", "Pallet", "Pallet #", "Pallet No."),
        "delivery_date": ("Delivery Date", "Deliver On", "Delivery"),
        "load": ("Load", "Load #", "Load No."),
        "dock": ("Dock", "Dock Door", "Door"),
        "shipment_id": ("Shipment ID", "Shipment", "Shipment #", "Shipment No."),
        "destination": ("Destination", "Ship To", "Deliver To"),
        "asn_number": ("ASN Number", "ASN", "ASN #", "ASN No."),
        "salesman": ("Salesman", "Sales Rep", "Rep"),
        "products.description": ("Description", "Product", "Item", "Item Description"),
        "products.cases": ("Cases", "Cs", "Case Qty"),
        "products.sales_units": ("Sales Units", "Units", "Sales Unit", "Qty"),
        "products.layers": ("Layers", "Lyrs", "Layer"),
        "total_cases": ("Total Cases", "Cases Total"),
        "total_units": ("Total Units", "Units Total"),
        "total_layers": ("Total Layers", "Layers Total"),
        "printed_date": ("Printed Date", "Printed", "Print Date", "Printed On"),
        "page_number": ("Page Number", "Page"),
        "invoice_number": ("Invoice Number", "Invoice No.", "Invoice #", "Invoice"),
        "invoice_date": ("Invoice Date", "Date", "Issued"),
        "due_date": ("Due Date", "Due"),
        "seller.tax_id": ("Tax ID", "VAT", "VAT ID"),
        "buyer.tax_id": ("Tax ID", "VAT", "VAT ID"),
        "currency": ("Currency",),
        "seller": ("From", "Seller"),
        "buyer": ("Bill To", "Buyer", "Customer"),
        "line_items.description": ("Description", "Item", "Product"),
        "line_items.quantity": ("Quantity", "Qty"),
        "line_items.unit_price": ("Unit Price", "Price", "Rate"),
        "line_items.amount": ("Amount", "Total", "Line Total"),
        "subtotal": ("Subtotal", "Net"),
        "tax": ("Tax", "VAT", "Sales Tax"),
        "total": ("Total", "Total Due", "Amount Due"),
        "receipt_number": ("Receipt #", "Receipt No.", "Order #"),
        "footer": ("Totals", "TOTAL", "Grand Total"),
        "title": ("INVOICE", "Invoice", "Tax Invoice"),
        "receipt": ("RECEIPT", "Sales Receipt", "CASH RECEIPT"),
    },
    "de": {
        "invoice_number": ("Rechnungsnummer", "Rechnungs-Nr.", "Rechnung Nr."),
        "invoice_date": ("Rechnungsdatum", "Datum"),
        "due_date": ("Fällig am", "Zahlbar bis"),
        "line_items.description": ("Beschreibung", "Bezeichnung", "Artikel"),
        "line_items.quantity": ("Menge", "Anzahl"),
        "line_items.unit_price": ("Einzelpreis", "Preis"),
        "line_items.amount": ("Betrag", "Gesamtpreis"),
        "subtotal": ("Zwischensumme", "Nettobetrag"),
        "tax": ("MwSt.", "USt"),
        "total": ("Gesamtbetrag", "Rechnungsbetrag", "Summe"),
        "seller": ("Lieferant", "Verkäufer"),
        "buyer": ("Rechnungsempfänger", "Kunde"),
        "seller.tax_id": ("USt-IdNr.", "Steuernummer"),
        "buyer.tax_id": ("USt-IdNr.",),
        "title": ("RECHNUNG", "Rechnung"),
        "receipt_number": ("Beleg-Nr.", "Bon-Nr."),
        "receipt": ("KASSENBON", "Quittung"),
        "footer": ("Gesamt", "Summe"),
    },
    "fr": {
        "invoice_number": ("N° de facture", "Facture N°", "Numéro de facture"),
        "invoice_date": ("Date de facture", "Date"),
        "due_date": ("Échéance", "Date d'échéance"),
        "line_items.description": ("Désignation", "Description"),
        "line_items.quantity": ("Qté", "Quantité"),
        "line_items.unit_price": ("Prix unitaire", "P.U."),
        "line_items.amount": ("Montant",),
        "subtotal": ("Total HT", "Sous-total"),
        "tax": ("TVA", "Montant TVA"),
        "total": ("Total TTC", "Net à payer", "Montant TTC"),
        "seller": ("Fournisseur", "Vendeur"),
        "buyer": ("Client", "Facturé à"),
        "seller.tax_id": ("N° TVA",),
        "buyer.tax_id": ("N° TVA",),
        "title": ("FACTURE", "Facture"),
        "receipt_number": ("Ticket N°",),
        "receipt": ("TICKET DE CAISSE", "Reçu"),
        "footer": ("Total", "Totaux"),
    },
    "nl": {
        "invoice_number": ("Factuurnummer", "Factuurnr."),
        "invoice_date": ("Factuurdatum", "Datum"),
        "due_date": ("Vervaldatum",),
        "line_items.description": ("Omschrijving", "Artikel"),
        "line_items.quantity": ("Aantal",),
        "line_items.unit_price": ("Prijs", "Stukprijs"),
        "line_items.amount": ("Bedrag",),
        "subtotal": ("Subtotaal", "Totaal excl. BTW"),
        "tax": ("BTW",),
        "total": ("Totaal", "Te betalen", "Totaalbedrag"),
        "seller": ("Leverancier",),
        "buyer": ("Klant", "Factuuradres"),
        "seller.tax_id": ("BTW-nummer",),
        "buyer.tax_id": ("BTW-nummer",),
        "title": ("FACTUUR", "Factuur"),
        "receipt_number": ("Bonnummer",),
        "receipt": ("KASSABON",),
        "footer": ("Totaal",),
    },
}
_LOCALES = {"en": "en_US", "de": "de_DE", "fr": "fr_FR", "nl": "nl_NL"}


def _label(spec: SchemaSpec, path: str, rng: random.Random, lang: str = "en") -> str:
    words = _VOCAB[lang].get(path) or _VOCAB["en"].get(path)
    if words is None:  # a field this generator has no words for: the schema's first label
        words = next(leaf.labels for leaf in spec.leaf_fields if leaf.path == path)
    return words[0] if rng.random() < 0.7 else rng.choice(words)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _qty(value: float) -> str:
    return f"{value:g}"


def _table(
    page: _Page,
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[float],
    size: int,
    lines: bool,
) -> None:
    """A table: first column left-aligned, the others right-aligned; ``widths`` are fractions of the text width."""
    left, usable = page.margin, page.width - 2 * page.margin
    edges = [left]
    for w in widths:
        edges.append(edges[-1] + int(usable * w))
    page.rule(2)
    for i, head in enumerate(headers):
        if i == 0:
            page.text(edges[0] + 4, head, size, bold=True)
        else:
            page.right(edges[i + 1] - 6, head, size)
    page.skip(int(size * 1.5))
    page.rule(1)
    for row in rows:
        for i, cell in enumerate(row):
            if i == 0:
                first = cell
                while not page.fits(first, size, edges[1] - edges[0] - 12) and len(first) > 4:
                    first = first[:-1]
                page.text(edges[0] + 4, first, size)
            else:
                page.right(edges[i + 1] - 6, cell, size)
        page.skip(int(size * 1.45))
        if lines:
            page.rule(1)
    if not lines:
        page.rule(1)


def _wrap(page: _Page, text: str, size: int, width: int) -> list[str]:
    """Split ``text`` into lines no wider than ``width``, at ', ' first, else at spaces."""
    lines: list[str] = []
    rest = text
    while rest and not page.fits(rest, size, width):
        cut = -1
        for sep in (", ", " "):
            pos = len(rest)
            while pos > 0:
                pos = rest.rfind(sep, 0, pos)
                if pos > 0 and page.fits(rest[: pos + (1 if sep == ", " else 0)], size, width):
                    cut = pos
                    break
            if cut > 0:
                break
        if cut <= 0:
            break
        keep = rest[: cut + 1] if rest[cut : cut + 2] == ", " else rest[:cut]
        lines.append(keep)
        rest = rest[cut + (2 if rest[cut : cut + 2] == ", " else 1) :]
    lines.append(rest)
    return lines


def _kv_lines(page: _Page, pairs: Sequence[tuple[str, str]], size: int, sep: str = ":") -> None:
    label_width = max(page.length(f"{k}{sep}", size) for k, _ in pairs) + 18
    value_width = page.width - 2 * page.margin - label_width
    for key, value in pairs:
        page.text(page.margin, f"{key}{sep}", size, bold=True)
        for line in _wrap(page, value, size, value_width):
            page.text(page.margin + label_width, line, size)
            page.skip(int(size * 1.55))


def _two_columns(page: _Page, pairs: Sequence[tuple[str, str]], size: int) -> None:
    half = (page.width - 2 * page.margin) // 2
    for row in range(0, len(pairs), 2):
        for col, (key, value) in enumerate(pairs[row : row + 2]):
            x = page.margin + col * (half + 10)
            used = page.text(x, f"{key}:", size, bold=True)
            page.text(x + used + 12, value, size)
        page.skip(int(size * 1.6))


def _stacked(page: _Page, pairs: Sequence[tuple[str, str]], size: int, per_row: int = 3) -> None:
    """Label above value, in boxes."""
    usable = page.width - 2 * page.margin
    cell = usable // per_row
    for row in range(0, len(pairs), per_row):
        top = page.y
        for col, (key, value) in enumerate(pairs[row : row + per_row]):
            x = page.margin + col * cell
            page.draw.rectangle([x, top, x + cell - 8, top + int(size * 2.9)], outline=(60, 60, 60), width=2)
            page.text(x + 8, key.upper(), int(size * 0.7), y=top + 5)
            fitted = size
            while fitted > 12 and not page.fits(value, fitted, cell - 24):
                fitted -= 1  # long values (addresses) shrink to stay inside their box
            page.text(x + 8, value, fitted, y=top + int(size * 1.25) + (size - fitted) // 2)
        page.y = top + int(size * 3.3)


# --- pallet label templates -------------------------------------------------------------------------------------


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
    return [(_label(spec, k, rng), data[k]) for k in keys]


def _pallet_rows(data: dict[str, Any]) -> list[list[str]]:
    return [[p["description"], p["cases"], p["sales_units"], p["layers"]] for p in data["products"]]


def _pallet_headers(spec: SchemaSpec, rng: random.Random) -> list[str]:
    return [_label(spec, f"products.{k}", rng) for k in ("description", "cases", "sales_units", "layers")]


def _pallet_totals(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    return [(_label(spec, k, rng), data[k]) for k in ("total_cases", "total_units", "total_layers")]


def _pallet_footer(
    page: _Page, spec: SchemaSpec, data: dict[str, Any], rng: random.Random, size: int
) -> None:
    page.skip(8)
    page.text(page.margin, f"{_label(spec, 'printed_date', rng)}: {data['printed_date']}", size)
    page.right(page.width - page.margin, f"{_label(spec, 'page_number', rng)}: {data['page_number']}", size)
    page.skip(int(size * 1.6))


def _pallet_keyvalue(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = _Page()
    page.text(page.margin, rng.choice(("PALLET LABEL", "LOAD MANIFEST", "PALLET MANIFEST")), 36, bold=True)
    page.skip(60)
    pairs = _pallet_header_pairs(spec, data, rng)
    pairs.insert(6, (_label(spec, "destination", rng), data["destination"]))
    _kv_lines(page, pairs, 22)
    page.skip(10)
    _table(page, _pallet_headers(spec, rng), _pallet_rows(data), (0.58, 0.12, 0.18, 0.12), 20, lines=False)
    page.skip(6)
    _kv_lines(page, _pallet_totals(spec, data, rng), 22)
    _pallet_footer(page, spec, data, rng, 18)
    return page.finish()


def _pallet_two_column(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = _Page()
    title = rng.choice(("PALLET LABEL", "SHIPPING MANIFEST"))
    page.text(page.margin, title, 34, bold=True)
    page.right(
        page.width - page.margin,
        f"{_label(spec, 'page_number', rng)}: {data['page_number']}",
        20,
        y=page.y + 8,
    )
    page.skip(56)
    page.rule(3)
    _two_columns(page, _pallet_header_pairs(spec, data, rng), 21)
    _kv_lines(page, [(_label(spec, "destination", rng), data["destination"])], 21)
    page.skip(10)
    _table(page, _pallet_headers(spec, rng), _pallet_rows(data), (0.55, 0.13, 0.19, 0.13), 20, lines=True)
    page.skip(6)
    _two_columns(page, _pallet_totals(spec, data, rng), 21)
    page.text(page.margin, f"{_label(spec, 'printed_date', rng)}: {data['printed_date']}", 18)
    page.skip(36)
    return page.finish()


def _pallet_stacked(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = _Page()
    page.text(page.margin, "PALLET", 40, bold=True)
    page.right(page.width - page.margin, data["shipment_id"], 30, y=page.y + 6)
    page.skip(66)
    pairs = _pallet_header_pairs(spec, data, rng)
    _stacked(page, pairs, 22)
    _stacked(page, [(_label(spec, "destination", rng), data["destination"])], 20, per_row=1)
    page.skip(8)
    _table(page, _pallet_headers(spec, rng), _pallet_rows(data), (0.52, 0.15, 0.18, 0.15), 20, lines=True)
    page.skip(8)
    _stacked(page, _pallet_totals(spec, data, rng), 22)
    _pallet_footer(page, spec, data, rng, 18)
    return page.finish()


# --- invoice templates ------------------------------------------------------------------------------------------


def _party_lines(spec: SchemaSpec, party: dict[str, Any], who: str, rng: random.Random) -> list[str]:
    lines = [party["name"], party["address"]]
    if party.get("tax_id"):
        lines.append(f"{_label(spec, f'{who}.tax_id', rng)}: {party['tax_id']}")
    return lines


def _invoice_rows(data: dict[str, Any]) -> list[list[str]]:
    return [
        [i["description"], _qty(i["quantity"]), _money(i["unit_price"]), _money(i["amount"])]
        for i in data["line_items"]
    ]


def _invoice_headers(spec: SchemaSpec, rng: random.Random) -> list[str]:
    return [_label(spec, f"line_items.{k}", rng) for k in ("description", "quantity", "unit_price", "amount")]


def _invoice_meta(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> list[tuple[str, str]]:
    pairs = [
        (_label(spec, "invoice_number", rng), data["invoice_number"]),
        (_label(spec, "invoice_date", rng), data["invoice_date"]),
    ]
    if data["due_date"]:
        pairs.append((_label(spec, "due_date", rng), data["due_date"]))
    pairs.append((_label(spec, "currency", rng), data["currency"]))
    return pairs


def _invoice_totals(
    page: _Page, spec: SchemaSpec, data: dict[str, Any], rng: random.Random, size: int
) -> None:
    x_label = page.width - page.margin - 330
    for key in ("subtotal", "tax", "total"):
        page.text(x_label, f"{_label(spec, key, rng)}:", size, bold=key == "total")
        page.right(page.width - page.margin, _money(data[key]), size)
        page.skip(int(size * 1.55))


def _invoice_blocks(
    page: _Page, spec: SchemaSpec, data: dict[str, Any], rng: random.Random, size: int
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
            for line in _wrap(page, text, size, half - 40):  # leave a gutter between the two blocks
                page.text(x, line, size, y=y)
                y += int(size * 1.35)
        page.y = max(page.y, y)
    page.skip(20)


def _invoice_classic(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = _Page()
    page.text(page.margin, "INVOICE", 40, bold=True)
    page.skip(70)
    _kv_lines(page, _invoice_meta(spec, data, rng), 20)
    page.skip(10)
    _invoice_blocks(page, spec, data, rng, 20)
    _table(page, _invoice_headers(spec, rng), _invoice_rows(data), (0.5, 0.12, 0.19, 0.19), 19, lines=False)
    page.skip(6)
    _invoice_totals(page, spec, data, rng, 21)
    return page.finish()


def _invoice_two_column(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = _Page()
    _invoice_blocks(page, spec, data, rng, 19)
    page.rule(3)
    page.text(page.margin, rng.choice(("Invoice", "INVOICE", "Tax Invoice")), 34, bold=True)
    page.skip(56)
    _two_columns(page, _invoice_meta(spec, data, rng), 20)
    page.skip(6)
    _table(page, _invoice_headers(spec, rng), _invoice_rows(data), (0.46, 0.14, 0.2, 0.2), 19, lines=True)
    page.skip(6)
    _invoice_totals(page, spec, data, rng, 20)
    return page.finish()


def _invoice_stacked(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    page = _Page()
    page.text(page.margin, "INVOICE", 38, bold=True)
    page.skip(64)
    _stacked(page, _invoice_meta(spec, data, rng), 20, per_row=4 if data["due_date"] else 3)
    page.skip(8)
    _invoice_blocks(page, spec, data, rng, 19)
    _table(page, _invoice_headers(spec, rng), _invoice_rows(data), (0.5, 0.12, 0.19, 0.19), 19, lines=True)
    page.skip(6)
    _invoice_totals(page, spec, data, rng, 20)
    return page.finish()


# --- variety: other typefaces, languages, number formats, footer-row totals, receipts ----------------------------


def _typeface(rng: random.Random) -> tuple[str, float]:
    """A font family and horizontal condensing: monospaced, condensed, serif or plain sans."""
    return rng.choice((("mono", 1.0), ("sans", 0.82), ("serif", 1.0), ("sans", 1.0), ("mono", 0.9)))


def _printed_date(iso: str, lang: str, currency: str | None, rng: random.Random) -> str:
    """A date as the language prints it: long with a month name, or numeric in the locale's order."""
    from babel.dates import format_date

    day = date.fromisoformat(iso)
    locale = _LOCALES[lang] if not (lang == "en" and currency not in (None, "USD")) else "en_GB"
    if rng.random() < 0.5:
        return str(format_date(day, "long", locale=locale))
    if lang == "de":
        return day.strftime("%d.%m.%Y")
    if lang == "nl":
        return day.strftime("%d-%m-%Y")
    if locale == "en_US":
        return f"{day.month}/{day.day}/{day.year}"
    return day.strftime("%d/%m/%Y")


def _printed_amount(value: float, lang: str, currency: str, rng: random.Random, symbol: bool = True) -> str:
    """An amount as the language prints it (``1.234,50 €``, ``€ 1.234,50``, ``$1,234.50``), or the number alone."""
    from babel.numbers import format_currency, format_decimal

    locale = _LOCALES[lang] if lang != "en" or currency == "USD" else "en_GB"
    if symbol:
        return str(format_currency(value, currency, locale=locale))
    return str(format_decimal(value, format="#,##0.00", locale=locale))


def _pallet_footer_totals(spec: SchemaSpec, data: dict[str, Any], rng: random.Random) -> Image.Image:
    """Label/value pairs without colons in two columns, the totals as the last row of the table."""
    family, condense = _typeface(rng)
    page = _Page(width=900, family=family, condense=condense)
    page.text(page.margin, rng.choice(("LOAD TAG", "PALLET TAG", "PICK LABEL")), 30, bold=True)
    page.skip(56)
    pairs = [(key.upper(), value) for key, value in _pallet_header_pairs(spec, data, rng)]
    destination = _label(spec, "destination", rng).upper()
    indent = max(page.length(key, 18) for key, _ in [*pairs, (destination, "")]) + 24
    half = (page.width - 2 * page.margin) // 2
    for row in range(0, len(pairs), 2):
        for col, (key, value) in enumerate(pairs[row : row + 2]):
            x = page.margin + col * (half + 10)
            page.text(x, key, 18)
            page.text(x + indent, value, 18)
        page.skip(32)
    page.text(page.margin, destination, 18)
    for line in _wrap(page, data["destination"], 18, page.width - 2 * page.margin - indent):
        page.text(page.margin + indent, line, 18)
        page.skip(28)
    page.skip(14)
    rows = [
        *_pallet_rows(data),
        [_label(spec, "footer", rng), data["total_cases"], data["total_units"], data["total_layers"]],
    ]
    _table(page, _pallet_headers(spec, rng), rows, (0.58, 0.12, 0.18, 0.12), 18, lines=False)
    _pallet_footer(page, spec, data, rng, 16)
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
    family, condense = _typeface(rng)
    page = _Page(family=family, condense=condense)
    page.text(page.margin, data["seller"]["name"], 26, bold=True)
    page.skip(38)
    page.text(page.margin, data["seller"]["address"][:70], 15)
    page.skip(44)
    page.text(page.margin, _label(spec, "title", rng, lang), 30, bold=True)
    page.skip(56)
    meta = [
        ("invoice_number", data["invoice_number"]),
        ("invoice_date", _printed_date(data["invoice_date"], lang, currency, rng)),
    ]
    if data["due_date"]:
        meta.append(("due_date", _printed_date(data["due_date"], lang, currency, rng)))
    cell = (page.width - 2 * page.margin) // 3
    for col, (path, value) in enumerate(meta):
        page.text(page.margin + col * cell, _label(spec, path, rng, lang), 15, bold=True, y=page.y)
        page.text(page.margin + col * cell, value, 19, y=page.y + 24)
    page.skip(74)
    page.text(page.margin, _label(spec, "buyer", rng, lang), 16, bold=True)
    page.skip(26)
    for line in (data["buyer"]["name"], data["buyer"]["address"]):
        for part in _wrap(page, line, 18, page.width - 2 * page.margin):
            page.text(page.margin, part, 18)
            page.skip(26)
    page.skip(20)
    headers = [
        _label(spec, f"line_items.{k}", rng, lang)
        for k in ("description", "quantity", "unit_price", "amount")
    ]
    rows = [
        [i["description"], _qty(i["quantity"]), _printed_amount(i["unit_price"], lang, currency, rng, False),
         _printed_amount(i["amount"], lang, currency, rng, False)]
        for i in data["line_items"]
    ]  # fmt: skip
    _table(page, headers, rows, (0.48, 0.12, 0.2, 0.2), 18, lines=rng.random() < 0.5)
    page.skip(8)
    x_label = page.width - page.margin - 340
    for key in ("subtotal", "tax", "total"):
        page.text(x_label, _label(spec, key, rng, lang), 19, bold=key == "total")
        page.right(
            page.width - page.margin, _printed_amount(data[key], lang, currency, rng), 19, bold=key == "total"
        )
        page.skip(32)
    buyer = {k: v for k, v in data["buyer"].items() if k != "tax_id"}
    return page.finish(), {**data, "seller": None, "buyer": {**buyer, "tax_id": None}}


def _invoice_receipt(
    spec: SchemaSpec, data: dict[str, Any], rng: random.Random
) -> tuple[Image.Image, dict[str, Any]]:
    """A till receipt: a shop name, a receipt number, a date, the amount paid; no buyer, no lines, no tax."""
    lang, currency = _invoice_language(data, rng)
    family, condense = _typeface(rng)
    page = _Page(width=620, family=family, condense=condense)
    page.text(page.margin, data["seller"]["name"][:28].upper(), 24, bold=True)
    page.skip(40)
    page.text(page.margin, data["seller"]["address"][:44], 14)
    page.skip(40)
    page.text(page.margin, _label(spec, "receipt", rng, lang), 20, bold=True)
    page.skip(40)
    page.text(page.margin, f"{_label(spec, 'receipt_number', rng, lang)} {data['invoice_number']}", 18)
    page.skip(30)
    page.text(page.margin, _printed_date(data["invoice_date"], lang, currency, rng), 18)
    page.skip(40)
    page.rule(1)
    page.skip(20)
    page.text(page.margin, _label(spec, "total", rng, lang).upper(), 22, bold=True)
    page.right(page.width - page.margin, _printed_amount(data["total"], lang, currency, rng), 22, bold=True)
    page.skip(60)
    truth = {
        "invoice_number": data["invoice_number"],
        "invoice_date": data["invoice_date"],
        "due_date": None,
        "seller": None,
        "buyer": None,
        "currency": currency,
        "line_items": None,
        "subtotal": None,
        "tax": None,
        "total": data["total"],
    }
    return page.finish(), truth


# --- two-page invoices as PDF: born-digital (a text layer) or scanned (images only) --------------------------------

_A4 = (595.0, 842.0)
Command = tuple[float, float, str, float, bool, str]
"""One line of text on a PDF page: x, y of its top (points), text, size (points), bold, align ("left"/"right")."""


def _two_page_invoice(
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
    left, right = 40.0, _A4[0] - 40.0

    def table_header(y: float) -> list[Command]:
        words = [
            _label(spec, f"line_items.{k}", rng, lang)
            for k in ("description", "quantity", "unit_price", "amount")
        ]
        return [(left, y, words[0], 10, True, "left"), (330, y, words[1], 10, True, "right"),
                (440, y, words[2], 10, True, "right"), (right, y, words[3], 10, True, "right")]  # fmt: skip

    def rows(lines: list[dict[str, Any]], y: float) -> tuple[list[Command], float]:
        out: list[Command] = []
        for item in lines:
            out += [
                (left, y, item["description"], 10, False, "left"),
                (330, y, _qty(item["quantity"]), 10, False, "right"),
                (440, y, _printed_amount(item["unit_price"], lang, currency, rng, False), 10, False, "right"),
                (right, y, _printed_amount(item["amount"], lang, currency, rng, False), 10, False, "right"),
            ]
            y += 18
        return out, y

    first: list[Command] = [
        (left, 40, data["seller"]["name"], 15, True, "left"),
        (left, 60, data["seller"]["address"], 8, False, "left"),
        (left, 100, _label(spec, "title", rng, lang), 18, True, "left"),
    ]
    y = 140.0
    meta = [
        ("invoice_number", data["invoice_number"]),
        ("invoice_date", _printed_date(data["invoice_date"], lang, currency, rng)),
    ]
    if data["due_date"]:
        meta.append(("due_date", _printed_date(data["due_date"], lang, currency, rng)))
    for path, value in meta:
        first += [
            (left, y, f"{_label(spec, path, rng, lang)}:", 10, True, "left"),
            (170, y, value, 10, False, "left"),
        ]
        y += 16
    y += 20
    first.append((left, y, _label(spec, "buyer", rng, lang), 10, True, "left"))
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
        second += [(330, y, f"{_label(spec, key, rng, lang)}:", 10, key == "total", "left"),
                   (right, y, _printed_amount(data[key], lang, currency, rng), 10, key == "total", "right")]  # fmt: skip
        y += 18
    second.append((right, 800, "2 / 2", 8, False, "right"))
    truth = {**data, "seller": None, "buyer": {**data["buyer"], "tax_id": None}}
    return [first, second], truth


def _raster(commands: list[Command], scale: float) -> Image.Image:
    page = Image.new("RGB", (int(_A4[0] * scale), int(_A4[1] * scale)), "white")
    draw = ImageDraw.Draw(page)
    for x, y, text, size, bold, align in commands:
        font = load_font(round(size * scale), "sans", bold)
        width = draw.textlength(text, font=font) if align == "right" else 0
        draw.text((x * scale - width, y * scale), text, fill=(20, 20, 20), font=font)
    return page


def write_pdf(
    out: str | Path, seed: int, *, text_layer: bool = True, schema: str | SchemaSpec = "invoice"
) -> dict[str, Any]:
    """Write a two-page invoice PDF and return its data: born-digital (with a text layer) or scanned (images only).

    Page 1 holds the header fields and the first line items, page 2 the rest and the totals, so reading it takes
    both pages (one result, merged). Born-digital pages are drawn with fpdf2 in DejaVu Sans; scanned ones are the
    same pages rendered at 150 dpi and saved as images in a PDF.

    Example:
        >>> # data = write_pdf("invoice.pdf", seed=3)                     # read from its text layer
        >>> # data = write_pdf("scan.pdf", seed=3, text_layer=False)      # read by OCR
    """
    spec = resolve_schema(schema)
    if spec.name != "invoice":
        raise ValueError(f"write_pdf draws invoices; schema {spec.name!r} has no multi-page template.")
    pages, truth = _two_page_invoice(spec, sample(spec, seed), random.Random(f"{seed}:pdf"))
    spec.validate_data(truth)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if text_layer:
        try:
            from fpdf import FPDF
        except ImportError:
            raise MissingDependencyError("Writing born-digital PDFs", "data", "fpdf2") from None
        pdf = FPDF(unit="pt", format=_A4)
        pdf.set_auto_page_break(False)
        pdf.add_font("DejaVu", "", str(font_path("sans")))
        pdf.add_font("DejaVu", "B", str(font_path("sans", bold=True)))
        for commands in pages:
            pdf.add_page()
            for x, y, text, size, bold, align in commands:
                pdf.set_font("DejaVu", "B" if bold else "", size)
                width = pdf.get_string_width(text) if align == "right" else 0.0
                pdf.text(x - width, y + size * 0.8, text)  # fpdf2 places text by its baseline
        pdf.output(str(out))
    else:
        images = [_raster(commands, 150 / 72) for commands in pages]
        images[0].save(out, "PDF", resolution=150.0, save_all=True, append_images=images[1:])
    return truth


Template = Callable[
    [SchemaSpec, dict[str, Any], random.Random], "Image.Image | tuple[Image.Image, dict[str, Any]]"
]
"""Draws a document; returns its page, or its page and the data as printed when it prints less than the sample."""
TEMPLATES: dict[str, dict[str, Template]] = {
    "pallet_label": {
        "keyvalue": _pallet_keyvalue,
        "two_column": _pallet_two_column,
        "stacked": _pallet_stacked,
        "footer_totals": _pallet_footer_totals,
    },
    "invoice": {
        "classic": _invoice_classic,
        "two_column": _invoice_two_column,
        "stacked": _invoice_stacked,
        "european": _invoice_european,
        "receipt": _invoice_receipt,
    },
}


# --- photo style ------------------------------------------------------------------------------------------------


def _perspective_coeffs(
    src: Sequence[tuple[float, float]], dst: Sequence[tuple[float, float]]
) -> list[float]:
    """Coefficients for Image.transform(PERSPECTIVE) mapping output points ``dst`` to input points ``src``."""
    import numpy as np

    rows = []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    a = np.array(rows, dtype=float)
    b = np.array([c for point in src for c in point], dtype=float)
    return [float(c) for c in np.linalg.solve(a, b)]


@functools.lru_cache(maxsize=1)
def _noise_tile() -> Any:
    import numpy as np

    return np.random.default_rng(12345).standard_normal((256, 256)).astype(np.float32)


def _noise(size: tuple[int, int], sigma: float, rng: random.Random) -> Image.Image:
    """Gaussian sensor noise around 128: a fixed random tile, scaled and laid at a random offset."""
    import numpy as np

    tile = np.roll(_noise_tile(), (rng.randrange(256), rng.randrange(256)), axis=(0, 1))
    small = Image.fromarray(np.clip(128.0 + sigma * tile, 0, 255).astype(np.uint8))
    out = Image.new("L", size)
    for y in range(0, size[1], 256):
        for x in range(0, size[0], 256):
            out.paste(small, (x, y))
    return out.convert("RGB")


def photo_style(page: Image.Image, rng: random.Random) -> Image.Image:
    """Make a clean page look like a phone photo of a printed sheet.

    Uneven lighting, a paper tint and a soft shadow, the sheet placed on a background at a slight angle and in
    perspective, lens blur, sensor noise and JPEG artefacts. Smooth effects are computed at 1/8 resolution and
    scaled up, and the per-pixel work stays in Pillow's C code, so a page takes a few tens of milliseconds.
    """
    import numpy as np

    w, h = page.size
    sw, sh = max(w // 8, 2), max(h // 8, 2)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xx / sw - 0.5) * math.cos(angle) + (yy / sh - 0.5) * math.sin(angle)
    light = 1.0 + rng.uniform(0.1, 0.25) * ramp
    shadow = Image.new("L", (sw, sh), 0)
    sx, sy = rng.uniform(0, sw), rng.uniform(0, sh)
    ImageDraw.Draw(shadow).polygon(
        [(sx + rng.uniform(-sw, sw) * 0.6, sy + rng.uniform(-sh, sh) * 0.6) for _ in range(4)], fill=255
    )
    shadow_mask = (
        np.asarray(shadow.filter(ImageFilter.GaussianBlur(rng.uniform(3, 7))), dtype=np.float32) / 255.0
    )
    light = light * (1.0 - rng.uniform(0.15, 0.35) * shadow_mask)
    tint = np.array(
        [rng.uniform(0.93, 1.0), rng.uniform(0.92, 1.0), rng.uniform(0.86, 0.98)], dtype=np.float32
    )
    shade = np.clip(light[..., None] * tint * 255.0, 0, 255).astype(np.uint8)
    shade_image = Image.fromarray(shade).resize((w, h), Image.Resampling.BILINEAR)
    sheet = ImageChops.multiply(page, shade_image).convert("RGBA")

    pad_x, pad_y = int(w * rng.uniform(0.06, 0.14)), int(h * rng.uniform(0.06, 0.14))
    cw, ch = w + 2 * pad_x, h + 2 * pad_y
    nrng = np.random.default_rng(rng.randrange(2**32))
    base = np.array([rng.randint(40, 150), rng.randint(35, 130), rng.randint(30, 110)], dtype=np.float32)
    background = base + nrng.normal(0, 12, (ch // 8 + 1, cw // 8 + 1, 3)).astype(np.float32)
    canvas = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).resize(
        (cw, ch), Image.Resampling.BILINEAR
    )

    rot = math.radians(rng.uniform(-4, 4))
    cx, cy = cw / 2, ch / 2
    corners = [(float(pad_x + dx), float(pad_y + dy)) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
    jitter = 0.035
    dst = []
    for x, y in corners:
        x += rng.uniform(-jitter, jitter) * w
        y += rng.uniform(-jitter, jitter) * h
        dx, dy = x - cx, y - cy
        dst.append(
            (cx + dx * math.cos(rot) - dy * math.sin(rot), cy + dx * math.sin(rot) + dy * math.cos(rot))
        )
    src = [(0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h))]
    coeffs = _perspective_coeffs(src, dst)
    warped = sheet.transform((cw, ch), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR)
    canvas.paste(warped, (0, 0), warped)

    # Lens softness: down- and up-sampling blurs like a phone camera at a fraction of a Gaussian blur's cost.
    soft = rng.uniform(0.55, 0.85)
    photo = canvas.resize((int(cw * soft), int(ch * soft)), Image.Resampling.BILINEAR).resize(
        (cw, ch), Image.Resampling.BILINEAR
    )
    photo = ImageChops.add(photo, _noise((cw, ch), rng.uniform(2.0, 7.0), rng), scale=1.0, offset=-128)
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=rng.randint(40, 80))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


# --- generation -------------------------------------------------------------------------------------------------


def render(
    schema: str | SchemaSpec,
    data: dict[str, Any],
    *,
    template: str | None = None,
    style: str = "clean",
    seed: int = 0,
) -> Document:
    """Draw ``data`` on a page with ``template`` (random when ``None``) in ``style`` (``clean`` or ``photo``)."""
    spec = resolve_schema(schema)
    templates = TEMPLATES.get(spec.name)
    if not templates:
        raise ValueError(f"No templates for schema {spec.name!r}; available: {', '.join(sorted(TEMPLATES))}.")
    rng = random.Random(seed)
    name = template or rng.choice(sorted(templates))
    if name not in templates:
        raise ValueError(
            f"Unknown template {name!r} for {spec.name}; available: {', '.join(sorted(templates))}."
        )
    if style not in ("clean", "photo", "rotated"):
        raise ValueError(f"style must be 'clean', 'photo' or 'rotated' for one document, got {style!r}.")
    drawn = templates[name](spec, data, rng)
    image, data = drawn if isinstance(drawn, tuple) else (drawn, data)
    spec.validate_data(data)
    if style == "photo":
        image = photo_style(image, rng)
    elif style == "rotated":  # a scan fed sideways or upside down
        image = image.rotate(rng.choice((90, 180, 270)), expand=True, fillcolor="white")
    return Document(data=data, image=image, template=name, style=style)


def generate(
    schema: str | SchemaSpec, seed: int, *, style: str = "clean", template: str | None = None
) -> Document:
    """One labelled document; the same ``seed`` gives the same data and the same image.

    ``style="mixed"`` picks clean or photo per document.
    """
    rng = random.Random(f"{seed}:doc")
    chosen = style if style != "mixed" else rng.choice(("clean", "photo"))
    return render(schema, sample(schema, seed), template=template, style=chosen, seed=seed)


def _split_counts(n: int, split: Sequence[float]) -> list[int]:
    if len(split) != 3 or any(s < 0 for s in split) or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise ValueError(
            f"split must be three non-negative fractions summing to 1, e.g. 0.8,0.1,0.1; got {split}."
        )
    train = round(n * split[0])
    valid = round(n * split[1])
    return [train, valid, n - train - valid]


def write_dataset(
    schema: str | SchemaSpec,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    style: Style = "clean",
    split: Sequence[float] = (0.8, 0.1, 0.1),
    template: str | None = None,
    progress: bool = False,
) -> dict[str, int]:
    """Write ``n`` documents as ``out/{train,valid,test}/annotations.jsonl`` plus images.

    Rows are ``{"image": file, "prefix": prompt, "suffix": json}``; annotations are byte-identical for the same seed.

    Returns:
        The number of documents per split.
    """
    spec = resolve_schema(schema)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}.")
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}.")
    out = Path(out)
    counts = _split_counts(n, split)
    from tqdm.auto import tqdm

    index = 0
    written: dict[str, int] = {}
    with tqdm(total=n, disable=not progress, desc=f"synth {spec.name}", unit="doc") as bar:
        for name, count in zip(("train", "valid", "test"), counts, strict=True):
            if count == 0:
                continue
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for _ in range(count):
                doc = generate(spec, seed * 1_000_003 + index, style=style, template=template)
                suffix = ".jpg" if doc.style == "photo" else ".png"
                file_name = f"{spec.name}_{index:05d}{suffix}"
                if suffix == ".jpg":
                    doc.image.save(folder / file_name, quality=90)
                else:
                    doc.image.save(folder / file_name, optimize=False)
                lines.append(
                    json.dumps(
                        {"image": file_name, "prefix": spec.prompt, "suffix": spec.dumps(doc.data)},
                        ensure_ascii=False,
                    )
                )
                index += 1
                bar.update(1)
            (folder / "annotations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            written[name] = count
    return written
