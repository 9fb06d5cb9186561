"""Evidence: where on the page each value was read, for the OCR backend and for a model that only writes text."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image, ImageDraw

from invoice_vlm import InvoiceExtractor, get_schema
from invoice_vlm.evidence import Word, locate
from invoice_vlm.inputs import TEXT_LAYER, TextRun
from invoice_vlm.testing import FakeBackend

# An invoice as its text layer prints it: runs of words in pixels of an 800 x 1000 page, labels beside values.
RUNS = [
    ("Norder Logistics Ltd", 60, 40, 330, 70),
    ("4 Dock Road, Leeds LS1 4AB", 60, 75, 300, 95),
    ("Invoice No: INV-2024-0193", 500, 40, 760, 62),
    ("Date: 3. März 2024", 500, 70, 700, 92),
    ("Description", 60, 300, 200, 320),
    ("Qty", 420, 300, 460, 320),
    ("Amount", 640, 300, 740, 320),
    ("Pallet wrap", 60, 330, 180, 350),
    ("2", 430, 330, 442, 350),
    ("1.000,00", 660, 330, 740, 350),
    ("Strapping", 60, 360, 170, 380),
    ("2", 430, 360, 442, 380),
    ("234,50", 676, 360, 740, 380),
    ("Total: 1.234,50 €", 560, 420, 740, 442),
]
WIDTH, HEIGHT = 800, 1000


def words() -> list[Word]:
    return [Word(text, (x0 / WIDTH, y0 / HEIGHT, x1 / WIDTH, y1 / HEIGHT)) for text, x0, y0, x1, y1 in RUNS]


def inside(box, run) -> bool:
    """Whether a 0-1 box lies within a run's pixel box."""
    _, x0, y0, x1, y1 = run
    return (
        box[0] >= x0 / WIDTH - 1e-3
        and box[2] <= x1 / WIDTH + 1e-3
        and box[1] >= y0 / HEIGHT - 1e-3
        and box[3] <= y1 / HEIGHT + 1e-3
    )


def run_of(text: str):
    return next(run for run in RUNS if run[0] == text)


def test_values_are_found_in_the_forms_their_kinds_print():
    data = {
        "invoice_number": "INV-2024-0193",
        "invoice_date": "2024-03-03",
        "seller": {"name": "Norder Logistics Ltd", "address": "4 Dock Road, Leeds LS1 4AB"},
        "currency": "EUR",
        "total": 1234.5,
        "line_items": [
            {"description": "Pallet wrap", "quantity": 2, "amount": 1000.0},
            {"description": "Strapping", "quantity": 2, "amount": 234.5},
        ],
    }
    found = locate(data, get_schema("invoice"), words())
    expected = {
        "invoice_number": ("INV-2024-0193", "Invoice No: INV-2024-0193"),
        "invoice_date": ("3. März 2024", "Date: 3. März 2024"),  # an ISO date where a German one is printed
        "seller.name": ("Norder Logistics Ltd", "Norder Logistics Ltd"),
        "total": ("1.234,50", "Total: 1.234,50 €"),  # 1234.5 where 1.234,50 is printed
        "currency": ("€", "Total: 1.234,50 €"),
        "line_items[0].amount": ("1.000,00", "1.000,00"),
        "line_items[1].amount": ("234,50", "234,50"),
        # The same quantity twice on the page: each row's own, by the row its description is on.
        "line_items[0].quantity": ("2", "2"),
        "line_items[1].description": ("Strapping", "Strapping"),
    }
    for path, (text, run) in expected.items():
        where = found[path]
        assert where.found and where.score == 1.0, (path, where)
        assert where.text == text, (path, where.text)
        assert inside(where.box, run_of(run) if path != "line_items[0].quantity" else RUNS[8]), (path, where)
    assert inside(found["line_items[1].quantity"].box, RUNS[11])
    # The label's text is not part of the value's box.
    assert found["total"].box[0] > 560 / WIDTH + 0.05


def test_a_value_printed_nowhere_is_marked_so():
    data = {"invoice_number": "INV-2024-0913", "invoice_date": "2024-03-30", "total": 1324.5}
    found = locate(data, get_schema("invoice"), words())
    assert not found["total"].found and found["total"].box is None  # similar digits elsewhere are not it
    assert not found["invoice_date"].found
    assert found["invoice_number"].found is False or found["invoice_number"].score < 1.0


def test_a_page_read_turned_gives_boxes_on_the_page_as_given():
    upright = words()
    turned = [Word(w.text, w.box, turn=180) for w in upright]
    data = {"invoice_number": "INV-2024-0193"}
    a = locate(data, get_schema("invoice"), upright)["invoice_number"].box
    b = locate(data, get_schema("invoice"), turned)["invoice_number"].box
    assert b == pytest.approx((1 - a[2], 1 - a[3], 1 - a[0], 1 - a[1]), abs=1e-3)


def page_with_text_layer() -> Image.Image:
    """A born-digital page: drawn, and its text runs attached as a PDF page's are."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    for text, x0, y0, _, _ in RUNS:
        draw.text((x0, y0), text, fill="black")
    image.info[TEXT_LAYER] = tuple(TextRun(text, x0, y0, x1, y1) for text, x0, y0, x1, y1 in RUNS)
    return image


def invented_total(image, request):
    return json.dumps(
        {
            "invoice_number": "INV-2024-0193",
            "invoice_date": "03/03/2024",
            "total": "1.999,00",
            "currency": "EUR",
        }
    )


def test_a_model_that_writes_text_gets_evidence_and_an_invented_value_needs_review():
    extractor = InvoiceExtractor(FakeBackend(invented_total), "invoice")
    result = extractor.extract(page_with_text_layer())
    evidence = result.evidence
    assert evidence["invoice_number"].found and evidence["invoice_date"].text == "3. März 2024"
    assert evidence["currency"].found
    assert not evidence["total"].found  # 1,999.00 is printed nowhere: a hint of a hallucination
    assert "total" in result.needs_review(0.0)
    record = result.to_record()
    assert record["evidence"]["total"] == {
        "found": False,
        "page": None,
        "box": None,
        "text": "",
        "score": 0.0,
    }
    assert record["evidence"]["invoice_number"]["page"] == 0
    off = InvoiceExtractor(FakeBackend(invented_total), "invoice", evidence=False)
    assert off.extract(page_with_text_layer()).evidence == {}


def test_each_page_of_a_merged_document_keeps_its_number():
    def per_page(image, request):
        return json.dumps(
            {"invoice_number": "INV-2024-0193", "invoice_date": "2024-03-03", "total": "1.234,50"}
        )

    first = page_with_text_layer()
    second = Image.new("RGB", (WIDTH, HEIGHT), "white")
    second.info[TEXT_LAYER] = (TextRun("Total: 1.234,50 €", 560, 900, 740, 922),)
    extractor = InvoiceExtractor(FakeBackend(per_page), "invoice")
    from invoice_vlm.inputs import OpenedPages

    [result] = extractor.extract_batch([OpenedPages((first, second), "two.pdf")], progress=False)
    assert result.evidence["invoice_number"].page == 0
    assert result.evidence["total"].found


# --- on real pixels: the OCR backend, and a text-writing model located by OCR ------------------------------------------


@pytest.mark.slow
def test_ocr_boxes_lie_where_the_documents_draw_their_values():
    pytest.importorskip("rapidocr")
    from .test_receipts import KINDS

    extractor = InvoiceExtractor.from_pretrained(backend="ocr", schema="invoice")
    keys = ("invoice_number", "invoice_date", "total", "seller.name")
    checked = 0
    for kind, make in KINDS.items():
        image, _ = make(random.Random(f"{kind}:0"))
        drawn = image.info["sheet"]["commands"]
        result = extractor.extract(image)
        draw = ImageDraw.Draw(image)
        for path in keys:
            where = result.evidence.get(path)
            assert where is not None and where.found, (kind, path, where)
            cx = (where.box[0] + where.box[2]) / 2 * image.width
            cy = (where.box[1] + where.box[3]) / 2 * image.height
            # The box's centre lies on a line the document drew, and that line holds the text found there.
            hits = []
            for x, y, text, size, _bold, right in drawn:
                width = draw.textlength(text, font=_font(image, size))
                left = x - width if right else x
                if left - 4 <= cx <= left + width + 4 and y - 4 <= cy <= y + size * 1.3 + 4:
                    hits.append(text)
            assert any(_squash(where.text) in _squash(text) for text in hits), (kind, path, where, hits)
            checked += 1
    assert checked == len(KINDS) * len(keys)


def _font(image, size):
    from invoice_vlm.data import synth

    return synth.load_font(size, image.info["sheet"]["family"])


def _squash(text: str) -> str:
    return "".join(c for c in text.casefold() if c.isalnum())


@pytest.mark.slow
def test_a_page_photographed_upside_down_gets_boxes_on_the_upload():
    pytest.importorskip("rapidocr")
    from .test_receipts import KINDS

    extractor = InvoiceExtractor.from_pretrained(backend="ocr", schema="invoice")
    image, _ = KINDS["us_invoice"](random.Random("us_invoice:0"))
    upright = extractor.extract(image).evidence["invoice_number"]
    turned = extractor.extract(image.rotate(180)).evidence["invoice_number"]
    assert turned.found and turned.text == upright.text
    a, b = upright.box, turned.box
    assert b == pytest.approx((1 - a[2], 1 - a[3], 1 - a[0], 1 - a[1]), abs=0.02)


@pytest.mark.slow
def test_a_text_writing_model_is_located_by_ocr():
    pytest.importorskip("rapidocr")
    from .test_receipts import KINDS

    image, truth = KINDS["dutch_webshop_invoice"](random.Random("dutch_webshop_invoice:0"))
    printed_date = next(
        t for _, _, t, *_ in image.info["sheet"]["commands"] if any(c.isdigit() for c in t) and "-" in t
    )

    def answer(page, request):
        return json.dumps(
            {
                "invoice_number": truth["invoice_number"],
                "invoice_date": truth["invoice_date"],  # ISO, printed otherwise on the page
                "total": "987654.32",  # invented
            }
        )

    result = InvoiceExtractor(FakeBackend(answer), "invoice").extract(image)
    assert result.evidence["invoice_number"].found and result.evidence["invoice_number"].score == 1.0
    assert result.evidence["invoice_date"].found, printed_date
    assert not result.evidence["total"].found and "total" in result.needs_review()
