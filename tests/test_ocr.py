"""The OCR backend: the layout parser on hand-made boxes, and RapidOCR end to end on rendered pages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from invoice_vlm import InvoiceExtractor, get_schema
from invoice_vlm.backends.ocr.layout import Box, parse_layout
from invoice_vlm.errors import ModelLoadError
from invoice_vlm.metrics import field_accuracy
from invoice_vlm.normalize import normalize_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def box(text, x, y, w=None, h=24, score=0.99, angle=0.0):
    w = w if w is not None else 11 * len(text)
    pts = [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]
    if angle:
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        pts = [(px * c - py * s, px * s + py * c) for px, py in pts]
    return Box(text, score, pts)


def pallet_boxes(angle=0.0):
    rows = [
        [("PALLET LABEL", 40, 20)],
        [("Route:", 40, 80), ("V183-RZ-924", 220, 80)],
        [("Pallet Number: 4", 40, 115), ("Dock Door: 7", 440, 115)],
        [("Dellvery Date: 3/14/2024", 40, 150), ("Load: 21", 440, 150)],
        [("Shlpment ID:", 40, 185), ("P24812736099", 220, 185)],
        [("Destination: Acme Foods, 12 Oak Street,", 40, 220)],
        [("Springfield, 62704", 220, 253)],
        [("ASN #: 8812736401", 40, 290), ("Sales Rep: Mary Smith", 440, 290)],
        [("Item", 40, 340), ("Cases", 480, 340, 60), ("Units", 600, 340, 60), ("Layers", 700, 340, 70)],
        [
            ("293847-ROLL OF METAL WIRE", 40, 380),
            ("10", 520, 380, 20),
            ("40", 640, 380, 20),
            ("2", 760, 380, 10),
        ],
        [("118822 - STEEL PIPE", 40, 415), ("5", 530, 415, 10), ("5", 650, 415, 10), ("1", 760, 415, 10)],
        [("Total Cases: 15", 40, 470), ("Total Units: 45", 440, 470)],
        [("Total Layers: 3", 40, 505)],
        [("Printed: 03/10/202414:05", 40, 550), ("Page: 1 of 1", 640, 550)],
    ]
    return [
        box(t, x, y, w=rest[0] if rest else None, angle=angle) for row in rows for (t, x, y, *rest) in row
    ]


EXPECTED = {
    "route": "V183-RZ-924",
    "pallet_number": "4",
    "delivery_date": "3/14/2024",
    "load": "21",
    "dock": "7",
    "shipment_id": "P24812736099",
    "destination": "Acme Foods, 12 Oak Street, Springfield, 62704",
    "asn_number": "8812736401",
    "salesman": "Mary Smith",
    "products": [
        {"description": "293847 - ROLL OF METAL WIRE", "cases": "10", "sales_units": "40", "layers": "2"},
        {"description": "118822 - STEEL PIPE", "cases": "5", "sales_units": "5", "layers": "1"},
    ],
    "total_cases": "15",
    "total_units": "45",
    "total_layers": "3",
    "printed_date": "03/10/2024 14:05",
    "page_number": "1 of 1",
}


@pytest.mark.parametrize("angle", [0.0, 4.0, -3.0])
def test_layout_parser_reads_a_label(angle):
    data, confidence = parse_layout(pallet_boxes(angle), get_schema("pallet_label"))
    assert data == EXPECTED
    get_schema("pallet_label").validate_data(data)
    assert confidence["shipment_id"] == pytest.approx(0.99)
    assert confidence["products[1].cases"] == pytest.approx(0.99)


def test_label_above_value_and_low_confidence():
    boxes = [
        box("ROUTE NO.", 40, 20),
        box("V183-RZ-924", 40, 50, score=0.61),
        box("DOCK DOOR", 300, 20),
        box("12", 300, 50),
    ]
    data, confidence = parse_layout(boxes, get_schema("pallet_label"))
    assert data["route"] == "V183-RZ-924" and data["dock"] == "12"
    assert confidence["route"] == pytest.approx(0.61)


def test_invoice_sections_tables_and_numbers():
    boxes = [
        box("INVOICE", 40, 10),
        box("Invoice No.: INV-2024-00042", 40, 60),
        box("Date: 2024-03-01", 440, 60),
        box("Currency: EUR", 40, 95),
        box("FROM", 40, 140),
        box("BILL TO", 440, 140),
        box("Acme GmbH", 40, 170),
        box("Globex LLC", 440, 170),
        box("Hauptstr. 1, 10115 Berlin,", 40, 200),
        box("1 Main St, Springfield", 440, 200),
        box("Germany", 40, 230),
        box("VAT ID: DE123456789", 40, 260),
        box("Description", 40, 320),
        box("Qty", 460, 320, 40),
        box("Unit Price", 560, 320, 110),
        box("Amount", 700, 320, 80),
        box("Consulting hours", 40, 360),
        box("10", 480, 360, 20),
        box("1,200.00", 590, 360, 80),
        box("12,000.00", 690, 360, 90),
        box("Subtotal:", 480, 420),
        box("12,000.00", 690, 420, 90),
        box("Tax:", 480, 455),
        box("2,280.00", 700, 455, 80),
        box("Total:", 480, 490),
        box("14,280.00", 690, 490, 90),
    ]
    printed, _ = parse_layout(boxes, get_schema("invoice"))
    assert printed["line_items"][0]["unit_price"] == "1,200.00"  # the reader returns what is printed...
    data = normalize_document(printed, get_schema("invoice")).data  # ...and normalisation makes it canonical
    assert data["invoice_number"] == "INV-2024-00042" and data["invoice_date"] == "2024-03-01"
    assert data["seller"] == {
        "name": "Acme GmbH",
        "address": "Hauptstr. 1, 10115 Berlin, Germany",
        "tax_id": "DE123456789",
    }
    assert data["buyer"] == {"name": "Globex LLC", "address": "1 Main St, Springfield", "tax_id": None}
    assert data["line_items"] == [
        {"description": "Consulting hours", "quantity": 10.0, "unit_price": 1200.0, "amount": 12000.0}
    ]
    assert (data["subtotal"], data["tax"], data["total"]) == (12000.0, 2280.0, 14280.0)
    assert data["due_date"] is None
    get_schema("invoice").validate_data(data)


# --- end to end with RapidOCR --------------------------------------------------------------------------------------

rapidocr = pytest.importorskip("rapidocr")


@pytest.fixture(scope="module")
def ocr_pallet():
    return InvoiceExtractor.from_pretrained(backend="ocr", schema="pallet_label")


@pytest.mark.slow
def test_example_document_reads_exactly(ocr_pallet):
    result = ocr_pallet.extract(EXAMPLES / "pallet_label.jpg")
    assert result.valid, result.errors
    assert result.to_dict() == json.loads((EXAMPLES / "pallet_label.json").read_text())
    assert 0.5 < result.confidence["shipment_id"] <= 1.0


@pytest.mark.slow
def test_one_backend_serves_two_schemas_interleaved(ocr_pallet):
    """The schema travels with each request: one OCR engine, two extractors, calls interleaved, each read right."""
    from invoice_vlm.data.synth import generate

    backend = ocr_pallet.backend
    invoices = InvoiceExtractor(backend, "invoice")
    pallets = InvoiceExtractor(backend, "pallet_label")
    docs = [generate("invoice", 910 + i, template="classic") for i in range(2)]
    expected_pallet = json.loads((EXAMPLES / "pallet_label.json").read_text())
    for doc in docs:
        pallet = pallets.extract(EXAMPLES / "pallet_label.jpg")
        invoice = invoices.extract(doc.image)
        assert pallet.valid and pallet.to_dict() == expected_pallet
        assert invoice.valid, invoice.errors
        assert invoice.to_dict()["invoice_number"] == doc.data["invoice_number"]
        assert invoice.to_dict()["total"] == doc.data["total"]
    # Structured data came back: nothing was written out as text to be parsed back.
    generation = backend.generate([docs[0].image], invoices.request)[0]
    assert generation.text is None and generation.data is not None and generation.field_confidence


@pytest.mark.slow
@pytest.mark.parametrize("schema", ["pallet_label", "invoice"])
def test_every_template_clean_photo_and_rotated(schema):
    from invoice_vlm.data.synth import TEMPLATES, generate

    ex = InvoiceExtractor.from_pretrained(backend="ocr", schema=schema)
    for style, floor in (("clean", 0.97), ("photo", 0.9), ("rotated", 0.97)):
        docs = [
            generate(schema, 900 + i, template=t, style=style)
            for i, t in enumerate(sorted(TEMPLATES[schema]))
        ]
        results = ex.extract_batch([d.image for d in docs], progress=False)
        score = field_accuracy([r.to_dict() or None for r in results], [d.data for d in docs], schema=schema)
        assert score["field_accuracy"] >= floor, (style, score["errors"])


def _unseen_layout() -> tuple[Image.Image, dict]:
    """A layout the parser was not written against: other label words, two columns, rotated 2 degrees."""
    font = ImageFont.load_default(size=22)
    img = Image.new("RGB", (900, 700), (250, 250, 245))
    d = ImageDraw.Draw(img)
    truth = {
        "route": "K442-MB-310",
        "pallet_number": "12",
        "delivery_date": "11/2/2025",
        "load": "5521",
        "dock": "33",
        "shipment_id": "P90817263544",
        "destination": "Northwind Traders, 77 Lake Road, Fairview, 30301",
        "asn_number": "4455667788",
        "salesman": "Robert Clark",
        "products": [
            {"description": "771100 - GLASS PANEL", "cases": "8", "sales_units": "16", "layers": "2"},
            {"description": "552200 - LED BULB", "cases": "30", "sales_units": "360", "layers": "4"},
        ],
        "total_cases": "38",
        "total_units": "376",
        "total_layers": "6",
        "printed_date": "10/30/2025 16:45",
        "page_number": "1 of 1",
    }
    left = [
        ("Route No.", "route"),
        ("Deliver On", "delivery_date"),
        ("Shipment #", "shipment_id"),
        ("Sales Rep", "salesman"),
    ]
    right = [("Pallet #", "pallet_number"), ("Load #", "load"), ("Door", "dock"), ("ASN #", "asn_number")]
    y = 40
    for (ll, lk), (rl, rk) in zip(left, right, strict=True):
        d.text((40, y), f"{ll} - {truth[lk]}", fill="black", font=font)
        d.text((470, y), f"{rl} - {truth[rk]}", fill="black", font=font)
        y += 44
    d.text((40, y), f"Ship To: {truth['destination']}", fill="black", font=font)
    y += 64
    for text, x in (("Item Description", 40), ("Case Qty", 470), ("Qty", 640), ("Lyrs", 780)):
        d.text((x, y), text, fill="black", font=font)
    y += 44
    for p in truth["products"]:
        d.text((40, y), p["description"], fill="black", font=font)
        for key, x in (("cases", 470), ("sales_units", 640), ("layers", 780)):
            d.text((x, y), p[key], fill="black", font=font)
        y += 40
    y += 20
    d.text((40, y), f"Cases Total: {truth['total_cases']}", fill="black", font=font)
    d.text((470, y), f"Units Total: {truth['total_units']}", fill="black", font=font)
    y += 44
    d.text((40, y), f"Layers Total: {truth['total_layers']}", fill="black", font=font)
    d.text((470, y), f"Page {truth['page_number']}", fill="black", font=font)
    y += 44
    d.text((40, y), f"Print Date: {truth['printed_date']}", fill="black", font=font)
    return img.rotate(2, expand=True, fillcolor=(90, 90, 90)), truth


@pytest.mark.slow
def test_unseen_layout(ocr_pallet):
    image, truth = _unseen_layout()
    result = ocr_pallet.extract(image)
    got = result.to_dict() if result.valid else json.loads(result.raw_text)
    score = field_accuracy([got], [truth], schema="pallet_label")
    assert score["field_accuracy"] >= 0.9, score["errors"]


def test_engine_loads_once_per_extractor(monkeypatch):
    import rapidocr as module

    made = []
    real = module.RapidOCR

    def counting(*args, **kwargs):
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "RapidOCR", counting)
    ex = InvoiceExtractor.from_pretrained(backend="ocr", schema="pallet_label")
    ex.extract_batch([Image.new("RGB", (200, 100), "white")] * 3, progress=False)
    ex.extract(Image.new("RGB", (200, 100), "white"))
    assert len(made) == 1


@pytest.mark.slow
def test_ocr_backend_errors_and_save(tmp_path, ocr_pallet):
    with pytest.raises(ModelLoadError, match="takes no model"):
        InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448", backend="ocr", schema="pallet_label")
    with pytest.raises(ModelLoadError, match="takes no adapter"):
        InvoiceExtractor.from_pretrained(backend="ocr", adapter="x", schema="pallet_label")
    saved = ocr_pallet.save_pretrained(tmp_path / "ocr-extractor")
    again = InvoiceExtractor.from_pretrained(saved)
    assert again.backend_name == "ocr" and again.schema.name == "pallet_label"
    blank = again.extract(Image.new("RGB", (200, 100), "white"))
    assert not blank.valid and "route: Field required" in " ".join(blank.errors)


@pytest.mark.slow
def test_cli_main_job(capsys):
    from invoice_vlm.cli import main

    code = main(
        [
            "extract",
            str(EXAMPLES / "pallet_label.jpg"),
            "--backend",
            "ocr",
            "--schema",
            "pallet_label",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    assert (
        record["valid"]
        and record["data"]["shipment_id"]
        == json.loads((EXAMPLES / "pallet_label.json").read_text())["shipment_id"]
    )


def test_output_text_follows_schema_order():
    boxes = [
        box("Amount", 700, 320, 80),
        box("Description", 40, 320),
        box("Qty", 460, 320, 40),
        box("Unit Price", 560, 320, 110),
        box("Hours", 40, 360),
        box("2", 490, 360, 10),
        box("10.00", 600, 360, 60),
        box("20.00", 700, 360, 60),
        box("SELLER", 40, 10),
        box("Tax ID: X1", 40, 40),
        box("Acme", 40, 70),
        box("1 Main St", 40, 100),
    ]
    data, _ = parse_layout(boxes, get_schema("invoice"))
    assert list(data["line_items"][0]) == ["description", "quantity", "unit_price", "amount"]
    assert list(data["seller"]) == ["name", "address", "tax_id"]


def test_missed_value_is_read_again_from_the_strip():
    boxes = [box("Total Layers:", 40, 20), box("Total Cases:", 40, 60), box("15", 200, 60)]
    strips = []

    def reader(corners):
        strips.append(corners)
        return ("3", 0.97)

    data, confidence = parse_layout(boxes, get_schema("pallet_label"), read_region=reader)
    assert data["total_layers"] == "3" and confidence["total_layers"] == 0.97 and data["total_cases"] == "15"
    assert len(strips) == 1 and min(x for x, _ in strips[0]) >= 40 + 11 * len("Total Layers:")
    data, _ = parse_layout(
        [box("Total Layers:", 40, 20)], get_schema("pallet_label"), read_region=lambda c: None
    )
    assert "total_layers" not in data


def test_titles_are_not_labels_and_run_together_labels_match():
    boxes = [
        box("PALLET", 40, 10, h=60),
        box("P24812736099", 400, 10, h=50),
        box("PALLETNUMBER", 40, 90),
        box("4", 40, 120),
        box("ROUTE", 300, 90),
        box("V183-RZ-924", 300, 120),
    ]
    data, _ = parse_layout(boxes, get_schema("pallet_label"))
    assert data["pallet_number"] == "4" and data["route"] == "V183-RZ-924"


class _Refusing:
    """An OCR engine that must not be called."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the OCR engine was called")


def test_born_digital_pdf_is_read_from_its_text_layer(tmp_path):
    from invoice_vlm.data.synth import write_pdf

    ex = InvoiceExtractor.from_pretrained(backend="ocr", schema="invoice")
    ex.backend.engine = _Refusing()
    ex.backend.orientation = _Refusing()
    for seed in (1, 2):
        truth = write_pdf(tmp_path / f"born-digital-{seed}.pdf", seed)
        result = ex.extract(tmp_path / f"born-digital-{seed}.pdf")  # two pages, one merged result
        assert result.valid, result.field_errors
        assert field_accuracy([result.to_dict()], [truth], schema="invoice")["field_accuracy"] == 1.0
        assert len(result.to_dict()["line_items"]) >= 4 and result.confidence["total"] == 1.0


@pytest.mark.slow
def test_scanned_pdf_is_read_by_ocr(tmp_path):
    from invoice_vlm.data.synth import write_pdf

    truth = write_pdf(tmp_path / "scan.pdf", 3, text_layer=False)
    ex = InvoiceExtractor.from_pretrained(backend="ocr", schema="invoice")
    calls = []
    engine = ex.backend.engine

    def counting(*args, **kwargs):
        calls.append(1)
        return engine(*args, **kwargs)

    ex.backend.engine = counting
    result = ex.extract(tmp_path / "scan.pdf")
    assert calls and result.valid, result.field_errors
    assert field_accuracy([result.to_dict()], [truth], schema="invoice")["field_accuracy"] >= 0.97


def test_footer_row_totals_never_become_items():
    rows = [
        [("Item", 40, 20), ("Cases", 480, 20, 60), ("Units", 600, 20, 60), ("Layers", 700, 20, 70)],
        [
            ("100001 - BOX OF FL00R TILE", 40, 60),
            ("10", 520, 60, 20),
            ("40", 640, 60, 20),
            ("2", 760, 60, 10),
        ],
        [("100002 - ROLL 0F WIRE", 40, 95), ("20", 520, 95, 20), ("20", 640, 95, 20), ("5", 760, 95, 10)],
        [("Totals", 40, 135), ("30", 520, 135, 20), ("60", 640, 135, 20), ("7", 760, 135, 10)],
    ]

    def boxes():
        return [box(t, x, y, w=rest[0] if rest else None) for row in rows for (t, x, y, *rest) in row]

    data, _ = parse_layout(boxes(), get_schema("pallet_label"))
    assert [p["description"] for p in data["products"]] == [
        "100001 - BOX OF FLOOR TILE",
        "100002 - ROLL OF WIRE",
    ]
    assert (data["total_cases"], data["total_units"], data["total_layers"]) == ("30", "60", "7")
    # A photo's perspective can lift the footer's numbers into the row above the footer word.
    rows[-1] = [("Totals", 40, 152), *rows[-1][1:]]
    data, _ = parse_layout(boxes(), get_schema("pallet_label"))
    assert len(data["products"]) == 2 and data["total_cases"] == "30"


def test_ocr_confusions_are_mended_by_kind():
    from invoice_vlm.backends.ocr.layout import mend_confusions

    assert mend_confusions("1O", "integer") == "10" and mend_confusions("l2S", "integer") == "125"
    assert mend_confusions("P24812736O99", "code") == "P24812736099"
    assert mend_confusions("V183-RZ-924", "code") == "V183-RZ-924"  # letters of a code stay
    assert mend_confusions("S183", "code") == "S183"  # a leading letter is no confusion
    assert mend_confusions("BOX 0F 100G SCREWS", "text") == "BOX OF 100G SCREWS"
    assert mend_confusions("EUR 1O,5O", "decimal") == "EUR 10,50"


def test_reader_names_no_template_of_the_generator():
    from invoice_vlm.backends.ocr import layout
    from invoice_vlm.data.synth import TEMPLATES

    source = Path(layout.__file__).read_text().lower()
    for templates in TEMPLATES.values():
        for name in templates:
            assert name.lower() not in source, name
