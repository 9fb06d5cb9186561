"""Drawing pages: fonts, a page that grows downwards, tables, key/value layouts, and the words templates print.

Templates of the built-in schemas use these, and so can a plugin schema's own templates (see
`invoice_vlm.data.synth.register_synth`).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from invoice_vlm.errors import MissingDependencyError
from invoice_vlm.schemas import SchemaSpec

__all__ = [
    "A4",
    "LOCALES",
    "PAGE_WIDTH",
    "VOCAB",
    "Command",
    "Page",
    "default_font",
    "font_path",
    "kv_lines",
    "label",
    "load_font",
    "money",
    "printed_amount",
    "printed_date",
    "qty",
    "raster",
    "stacked",
    "table",
    "two_columns",
    "typeface",
    "wrap",
]

PAGE_WIDTH = 850
A4 = (595.0, 842.0)
Command = tuple[float, float, str, float, bool, str]
"""One line of text on a PDF page: x, y of its top (points), text, size (points), bold, align ("left"/"right")."""


def default_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font (ASCII only) at ``size`` pixels."""
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


class Page:
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
        """The page's font at ``size``."""
        return default_font(size) if self.family == "default" else load_font(size, self.family, bold)

    def length(self, text: str, size: int) -> int:
        """Width of ``text`` in pixels, condensing included."""
        return int(self.draw.textlength(text, font=self.font(size)) * self.condense)

    def text(self, x: int, text: str, size: int, *, bold: bool = False, y: int | None = None) -> int:
        """Draw ``text`` at ``x`` (and the current line, or ``y``); returns its width."""
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
        """Draw ``text`` ending at ``x_right``."""
        self.text(x_right - self.length(text, size), text, size, y=y, bold=bold)

    def rule(self, thickness: int = 2) -> None:
        """A horizontal line across the text width, then a small gap."""
        self.draw.line(
            [(self.margin, self.y), (self.width - self.margin, self.y)], fill=(30, 30, 30), width=thickness
        )
        self.y += 10

    def skip(self, dy: int) -> None:
        """Move the current line down by ``dy`` pixels."""
        self.y += dy

    def fits(self, text: str, size: int, width: int) -> bool:
        """Whether ``text`` is at most ``width`` pixels wide."""
        return self.length(text, size) <= width

    def finish(self) -> Image.Image:
        """The page cropped below its last line."""
        height = max(self.y + self.margin, int(self.width * 0.7))
        return self.image.crop((0, 0, self.width, height))


# The generator's own words per language: what its templates print. They are not the schema's labels (which a reader
# matches), so a template exercises the schema's synonyms instead of echoing them.
VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
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
LOCALES = {"en": "en_US", "de": "de_DE", "fr": "fr_FR", "nl": "nl_NL"}


def label(spec: SchemaSpec, path: str, rng: random.Random, lang: str = "en") -> str:
    """A word this generator prints for ``path`` in ``lang``: usually the first, sometimes another."""
    words = VOCAB[lang].get(path) or VOCAB["en"].get(path)
    if words is None:  # a field this generator has no words for: the schema's first label
        words = next(leaf.labels for leaf in spec.leaf_fields if leaf.path == path)
    return words[0] if rng.random() < 0.7 else rng.choice(words)


def money(value: float) -> str:
    """``1,234.50``."""
    return f"{value:,.2f}"


def qty(value: float) -> str:
    """A quantity without trailing zeros."""
    return f"{value:g}"


def table(
    page: Page,
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


def wrap(page: Page, text: str, size: int, width: int) -> list[str]:
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


def kv_lines(page: Page, pairs: Sequence[tuple[str, str]], size: int, sep: str = ":") -> None:
    """``Label: value`` lines, values aligned in one column and wrapped."""
    label_width = max(page.length(f"{k}{sep}", size) for k, _ in pairs) + 18
    value_width = page.width - 2 * page.margin - label_width
    for key, value in pairs:
        page.text(page.margin, f"{key}{sep}", size, bold=True)
        for line in wrap(page, value, size, value_width):
            page.text(page.margin + label_width, line, size)
            page.skip(int(size * 1.55))


def two_columns(page: Page, pairs: Sequence[tuple[str, str]], size: int) -> None:
    """``Label: value`` pairs, two per line."""
    half = (page.width - 2 * page.margin) // 2
    for row in range(0, len(pairs), 2):
        for col, (key, value) in enumerate(pairs[row : row + 2]):
            x = page.margin + col * (half + 10)
            used = page.text(x, f"{key}:", size, bold=True)
            page.text(x + used + 12, value, size)
        page.skip(int(size * 1.6))


def stacked(page: Page, pairs: Sequence[tuple[str, str]], size: int, per_row: int = 3) -> None:
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


def typeface(rng: random.Random) -> tuple[str, float]:
    """A font family and horizontal condensing: monospaced, condensed, serif or plain sans."""
    return rng.choice((("mono", 1.0), ("sans", 0.82), ("serif", 1.0), ("sans", 1.0), ("mono", 0.9)))


def printed_date(iso: str, lang: str, currency: str | None, rng: random.Random) -> str:
    """A date as the language prints it: long with a month name, or numeric in the locale's order."""
    from babel.dates import format_date

    day = date.fromisoformat(iso)
    locale = LOCALES[lang] if not (lang == "en" and currency not in (None, "USD")) else "en_GB"
    if rng.random() < 0.5:
        return str(format_date(day, "long", locale=locale))
    if lang == "de":
        return day.strftime("%d.%m.%Y")
    if lang == "nl":
        return day.strftime("%d-%m-%Y")
    if locale == "en_US":
        return f"{day.month}/{day.day}/{day.year}"
    return day.strftime("%d/%m/%Y")


def printed_amount(value: float, lang: str, currency: str, rng: random.Random, symbol: bool = True) -> str:
    """An amount as the language prints it (``1.234,50 €``, ``€ 1.234,50``, ``$1,234.50``), or the number alone."""
    from babel.numbers import format_currency, format_decimal

    locale = LOCALES[lang] if lang != "en" or currency == "USD" else "en_GB"
    if symbol:
        return str(format_currency(value, currency, locale=locale))
    return str(format_decimal(value, format="#,##0.00", locale=locale))


def raster(commands: list[Command], scale: float) -> Image.Image:
    """Text commands of one A4 page drawn as an image at ``scale`` pixels per point."""
    page = Image.new("RGB", (int(A4[0] * scale), int(A4[1] * scale)), "white")
    draw = ImageDraw.Draw(page)
    for x, y, text, size, bold, align in commands:
        font = load_font(round(size * scale), "sans", bold)
        width = draw.textlength(text, font=font) if align == "right" else 0
        draw.text((x * scale - width, y * scale), text, fill=(20, 20, 20), font=font)
    return page
