"""Normalisation by field kind: printed forms in, canonical values out, the printed text kept."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from PIL import Image
from pydantic import BaseModel, Field

from invoice_vlm import InvoiceExtractor, SchemaSpec, get_schema
from invoice_vlm.normalize import (
    normalize_amount,
    normalize_currency,
    normalize_date,
    normalize_document,
    normalize_value,
)
from invoice_vlm.parsing import check_sums, parse_output
from invoice_vlm.schemas.fields import build_tree, field_info
from invoice_vlm.testing import FakeBackend

# (printed, ISO): 36 dates in English, French, German, Dutch, Spanish and Italian, numeric in every order.
DATES = [
    ("August 3, 2014", "2014-08-03"),
    ("Aug. 3, 2014", "2014-08-03"),
    ("3rd August 2014", "2014-08-03"),
    ("3 August 2014", "2014-08-03"),
    ("Monday, March 4, 2024", "2024-03-04"),
    ("2024-03-01", "2024-03-01"),
    ("2024/3/1", "2024-03-01"),
    ("05 Juillet 2015", "2015-07-05"),
    ("5 juillet 2015", "2015-07-05"),
    ("1er mars 2022", "2022-03-01"),
    ("31 déc. 2023", "2023-12-31"),
    ("12 février 2021", "2021-02-12"),
    ("3. März 2024", "2024-03-03"),
    ("15. Januar 2023", "2023-01-15"),
    ("1. Dezember 2020", "2020-12-01"),
    ("Mär 3, 2024", "2024-03-03"),
    ("12 januari 2023", "2023-01-12"),
    ("2 mei 2022", "2022-05-02"),
    ("30 augustus 2019", "2019-08-30"),
    ("1 de marzo de 2024", "2024-03-01"),
    ("15 de septiembre de 2022", "2022-09-15"),
    ("7 diciembre 2021", "2021-12-07"),
    ("3 febbraio 2021", "2021-02-03"),
    ("21 ottobre 2020", "2020-10-21"),
    ("1° giugno 2019", "2019-06-01"),
    ("20-10-2015", "2015-10-20"),
    ("28/11/2022", "2022-11-28"),
    ("14.02.2023", "2023-02-14"),
    ("11/28/2022", "2022-11-28"),
    ("5/17/24", "2024-05-17"),
    ("03/04/2024", "2024-04-03"),  # ambiguous: day-first unless told otherwise
    ("3.4.2024", "2024-04-03"),
    ("31-12-99", "1999-12-31"),
    ("2015.07.05", "2015-07-05"),
    ("07/05/2015", "2015-05-07"),
    ("1 Jan 2025", "2025-01-01"),
]


@pytest.mark.parametrize(("printed", "iso"), DATES)
def test_dates(printed, iso):
    found = normalize_value(printed, "date")
    assert (found.value, found.error) == (iso, None)
    assert found.printed == (None if printed == iso else printed)  # the printed text is kept beside the value


def test_ambiguous_date_order_and_non_dates():
    assert str(normalize_date("03/04/2024", "MDY")) == "2024-03-04"
    assert str(normalize_date("03/04/2024", "DMY")) == "2024-04-03"
    assert (
        str(normalize_date("13/04/2024", "MDY")) == "2024-04-13"
    )  # a day above 12 decides whatever the hint
    for text in ("yesterday", "AMOUNT DUE ON", "12", "", "31/02/2024", "INV-2024-0042"):
        assert normalize_date(text) is None, text
    bad = normalize_value("next Friday", "date")
    assert bad.value == "next Friday" and "not a date" in (bad.error or "")


# (printed, amount, ISO currency or None): 24 amounts.
AMOUNTS = [
    ("€ 717,97", "717.97", "EUR"),
    ("€ 4.904,94", "4904.94", "EUR"),
    ("49,99", "49.99", None),
    ("1,012.50", "1012.50", None),
    ("$1,234.56", "1234.56", "USD"),
    ("₹ 12,34,567.00", "1234567.00", "INR"),
    ("EUR 49,99", "49.99", "EUR"),
    ("12.000,00 EUR", "12000.00", "EUR"),
    ("CHF 1'234.50", "1234.50", "CHF"),
    ("1 234,56 €", "1234.56", "EUR"),
    ("1\u202f234,56\xa0€", "1234.56", "EUR"),
    ("£3", "3", "GBP"),
    ("-12.50", "-12.50", None),
    ("(12,50)", "-12.50", None),
    ("$ -7.00", "-7.00", "USD"),
    ("0.00", "0.00", None),
    ("1.234.567,89", "1234567.89", None),
    ("1,234,567.89", "1234567.89", None),
    ("USD 10", "10", "USD"),
    ("¥1,200", "1200", "JPY"),
    ("12,5 %", None, None),
    ("AMOUNT DUE ON August 3, 2014", None, None),
    ("n/a", None, None),
    ("2 500,00 zł", "2500.00", "PLN"),
]


@pytest.mark.parametrize(("printed", "amount", "currency"), AMOUNTS)
def test_amounts(printed, amount, currency):
    if printed.endswith("%"):
        # A rate is not an amount for the reader (see plausible()), but its number still reads.
        assert normalize_amount(printed)[0] == Decimal("12.5")
        return
    assert normalize_amount(printed) == (Decimal(amount) if amount else None, currency)


def test_amount_as_field_value():
    found = normalize_value("€ 4.904,94", "decimal", json_type="number")
    assert (found.value, found.printed, found.currency) == (4904.94, "€ 4.904,94", "EUR")
    assert normalize_value(12.5, "decimal", json_type="number").value == 12.5
    assert normalize_value("1.200", "integer", json_type="string").value == "1200"
    assert normalize_value("12 pcs", "integer", json_type="integer").value == 12
    assert "not a whole number" in (normalize_value("1,5", "integer").error or "")
    assert "not an amount" in (normalize_value("TOTAL", "decimal", json_type="number").error or "")


CURRENCIES = [
    ("€", "EUR"),
    ("$", "USD"),
    ("₹", "INR"),
    ("EUR", "EUR"),
    ("eur", "EUR"),
    ("£", "GBP"),
    ("¥", "JPY"),
    ("CHF", "CHF"),
    ("zł", "PLN"),
    ("R$", "BRL"),
    ("₩", "KRW"),
    ("euro", "EUR"),
    ("Euros", "EUR"),
    ("US dollars", "USD"),
]


@pytest.mark.parametrize(("printed", "code"), CURRENCIES)
def test_currencies(printed, code):
    assert normalize_currency(printed) == code
    found = normalize_value(printed, "currency")
    assert found.value == code and found.printed == (None if printed == code else printed)


def test_unknown_currency_is_a_field_error():
    found = normalize_value("beads", "currency")
    assert found.value == "beads" and "not a currency" in (found.error or "")


def test_document_keeps_printed_text_and_infers_currency():
    doc = {
        "invoice_number": "F-7",
        "invoice_date": "05 Juillet 2015",
        "line_items": [{"description": "Nuit", "amount": "717,97"}],
        "subtotal": "717,97",
        "total": "€ 717,97",
    }
    out = normalize_document(doc, get_schema("invoice"))
    assert out.data["invoice_date"] == "2015-07-05" and out.data["total"] == 717.97
    assert out.data["currency"] == "EUR"  # from the sign beside the total
    assert out.printed == {
        "invoice_date": "05 Juillet 2015",
        "line_items[0].amount": "717,97",
        "subtotal": "717,97",
        "total": "€ 717,97",
        "currency": "€ 717,97",
    }
    assert doc["total"] == "€ 717,97"  # the input is not changed


def test_document_date_order_rules():
    spec = get_schema("invoice")
    # A US document (USD) reads ambiguous dates month-first...
    us = normalize_document({"invoice_date": "03/04/2024", "currency": "USD"}, spec)
    assert us.data["invoice_date"] == "2024-03-04"
    us_sign = normalize_document({"invoice_date": "03/04/2024", "total": "$10.00"}, spec)
    assert us_sign.data["invoice_date"] == "2024-03-04"
    # ...another date of the same document that fixes the order wins over the currency...
    fixed = normalize_document(
        {"invoice_date": "03/04/2024", "due_date": "17/04/2024", "currency": "USD"}, spec
    )
    assert (fixed.data["invoice_date"], fixed.data["due_date"]) == ("2024-04-03", "2024-04-17")
    # ...and elsewhere day-first, unless the schema says otherwise.
    assert normalize_document({"invoice_date": "03/04/2024"}, spec).data["invoice_date"] == "2024-04-03"
    from dataclasses import replace

    mdy = replace(spec, date_order="MDY")
    assert normalize_document({"invoice_date": "03/04/2024"}, mdy).data["invoice_date"] == "2024-03-04"


def test_sums_are_checked_never_fixed():
    label = json.loads(
        '{"products": [{"description": "1 - A", "cases": "10", "sales_units": "10", "layers": "1"},'
        ' {"description": "2 - B", "cases": "5", "sales_units": "5", "layers": "1"}],'
        ' "total_cases": "16", "total_units": "15", "total_layers": "2"}'
    )
    assert check_sums(label, get_schema("pallet_label")) == {
        "total_cases": "is 16 but the products add up to 15 (cases: 10 + 5)"
    }
    invoice = {
        "invoice_number": "1",
        "invoice_date": "2024-01-02",
        "line_items": [{"description": "a", "amount": 10.0}, {"description": "b", "amount": 2.5}],
        "subtotal": 12.5,
        "total": 13.0,
    }
    assert check_sums(invoice, get_schema("invoice")) == {}
    result = parse_output(json.dumps({**invoice, "subtotal": 12.0}), get_schema("invoice"))
    assert not result.valid and result.field_errors == {
        "subtotal": "is 12.0 but the line_items add up to 12.5 (amount: 10.0 + 2.5)"
    }
    assert result.partial is not None and result.partial["subtotal"] == 12.0  # reported, not fixed


def test_every_backend_gets_normalised_values(white_image):
    """A model trained on printed strings still returns canonical values, its printed text kept."""
    raw = json.dumps(
        {
            "invoice_number": "RE-2024-0815",
            "invoice_date": "3. März 2024",
            "due_date": "17.03.2024",
            "currency": "€",
            "total": "1.234,50",
        },
        ensure_ascii=False,
    )
    result = InvoiceExtractor(backend=FakeBackend(raw), schema="invoice").extract(white_image)
    assert result.valid, result.errors
    assert result.to_dict()["invoice_date"] == "2024-03-03" and result.to_dict()["due_date"] == "2024-03-17"
    assert result.to_dict()["currency"] == "EUR" and result.to_dict()["total"] == 1234.5
    assert result.printed["invoice_date"] == "3. März 2024" and result.raw_text == raw
    record = result.to_record()
    assert record["printed"]["total"] == "1.234,50" and record["partial"] is None


def test_invalid_result_keeps_what_was_read(white_image):
    raw = json.dumps({"invoice_number": "A-1", "invoice_date": "sometime", "total": "€ 12,00"})
    result = InvoiceExtractor(backend=FakeBackend(raw), schema="invoice").extract(white_image)
    assert not result.valid and result.to_dict() == {}
    assert set(result.field_errors) == {"invoice_date"}
    assert "'sometime' is not a date" in result.field_errors["invoice_date"]
    assert result.partial == {
        "invoice_number": "A-1",
        "invoice_date": "sometime",
        "total": 12.0,
        "currency": "EUR",
    }
    assert result.to_record()["partial"] == result.partial


def test_receipt_is_a_valid_invoice():
    """Version 2 requires only number, date and total: a receipt without buyer or lines validates."""
    spec = get_schema("invoice")
    assert spec.version == "2"
    spec.validate_data({"invoice_number": "9", "invoice_date": "2014-08-03", "total": 49.99})
    required = {leaf.path for leaf in spec.leaf_fields if leaf.required and leaf.in_list is None}
    assert {"invoice_number", "invoice_date", "total"} <= required
    assert not {"subtotal", "tax", "currency", "due_date"} & required


def test_field_tree_reads_kinds_labels_and_a_plugin_extends_them():
    class Parcel(BaseModel):
        tracking: str = Field(json_schema_extra=field_info("Tracking No.", kind="code"))
        weight: float
        sent: str = Field(json_schema_extra=field_info("Sent", kind="date"))

    tree = build_tree(Parcel)
    assert [(leaf.path, leaf.kind, leaf.json_type) for leaf in tree.leaves] == [
        ("tracking", "code", "string"),
        ("weight", "decimal", "number"),
        ("sent", "date", "string"),
    ]
    spec = SchemaSpec(name="parcel", model=Parcel, prompt="p").with_labels({"tracking": ["Sendungsnummer"]})
    assert spec.tree.leaf("tracking").labels == ("Tracking No.", "Sendungsnummer")
    with pytest.raises(ValueError, match="name no field: nope"):
        SchemaSpec(name="parcel", model=Parcel, prompt="p", extra_labels={"nope": ("x",)})
    with pytest.raises(ValueError, match="Unknown field kind"):
        field_info("x", kind="money")  # type: ignore[arg-type]


def test_metrics_compare_dates_and_currencies_canonically():
    from invoice_vlm.metrics import field_accuracy

    score = field_accuracy(
        [{"invoice_date": "05/07/2015", "currency": "€", "total": "1.234,50"}],
        [{"invoice_date": "2015-07-05", "currency": "EUR", "total": 1234.5}],
        schema="invoice",
    )
    assert score["field_accuracy"] == 1.0


def test_two_page_merge_first_header_last_totals(tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    del pdfium
    pages = [Image.new("RGB", (200, 280), "white"), Image.new("RGB", (200, 280), "white")]
    path = tmp_path / "two.pdf"
    pages[0].save(path, "PDF", save_all=True, append_images=pages[1:])
    first = json.dumps(
        {
            "invoice_number": "7",
            "invoice_date": "2024-01-02",
            "line_items": [{"description": "a", "amount": 1.0}],
        }
    )
    second = json.dumps(
        {
            "invoice_number": "X",
            "line_items": [{"description": "b", "amount": 2.0}],
            "subtotal": 3.0,
            "total": 3.0,
        }
    )
    result = InvoiceExtractor(backend=FakeBackend([first, second]), schema="invoice").extract(path)
    assert result.valid, result.errors
    data = result.to_dict()
    assert data["invoice_number"] == "7" and data["total"] == 3.0
    assert [i["description"] for i in data["line_items"]] == ["a", "b"]
    assert result.source == str(path) and result.raw_text == f"{first}\f{second}"
    # A pallet label file is read page by page: one result per page, named by page.
    labels = InvoiceExtractor(backend=FakeBackend("{}"), schema="pallet_label")
    results = labels.extract_batch([path, Image.new("RGB", (50, 50))], progress=False)
    assert [r.source for r in results] == [f"{path}#page=1", f"{path}#page=2", "<PIL image 50x50>"]
    with pytest.raises(Exception, match="has 2 pages"):
        labels.extract(path)
    merged = labels.extract_batch([path], progress=False, pages="merge")
    assert len(merged) == 1


@pytest.mark.parametrize(
    ("printed", "kind", "expected"),
    [
        # a quantity and an amount that a column gap ran together: refused, never joined
        ("1 6.00", "decimal", None),
        ("2 4.50", "decimal", None),
        ("3 12", "integer", None),
        ("12 34,50", "decimal", None),
        ("1 2345", "integer", None),
        # spaces that group thousands in threes: read
        ("1 234,50", "decimal", 1234.5),
        ("12 345 678", "integer", 12345678),
        ("1\u00a0234.50", "decimal", 1234.5),
        ("€ 1 234,50", "decimal", 1234.5),
        ("1 200", "integer", 1200),
    ],
)
def test_space_joined_numbers_are_refused_and_grouped_ones_read(printed, kind, expected):
    json_type = "integer" if kind == "integer" else "number"
    found = normalize_value(printed, kind, json_type=json_type)
    if expected is None:
        assert found.error is not None and found.value == printed
    else:
        assert found.error is None and found.value == expected


def test_the_total_is_checked_against_its_parts_and_the_lines_both_ways():
    spec = get_schema("invoice")
    lines = [{"description": "a", "amount": 1000.0}, {"description": "b", "amount": 234.5}]
    base = {"invoice_number": "1", "invoice_date": "2024-01-02", "line_items": lines, "currency": "EUR"}
    # Lines that add up to 1,234.50 and a total of 1,999.00, with nothing beside it: a field error on the total.
    wrong = parse_output(json.dumps({**base, "total": "1,999.00"}), spec)
    assert not wrong.valid and set(wrong.field_errors) == {"total"}
    assert "1234.5" in wrong.field_errors["total"] and "tax" in wrong.field_errors["total"]
    # The same lines with a total a tax explains, subtotal + tax exact, or the lines alone: valid.
    assert parse_output(json.dumps({**base, "total": 1234.5}), spec).valid
    assert parse_output(json.dumps({**base, "subtotal": 1234.5, "tax": 259.25, "total": 1493.75}), spec).valid
    assert parse_output(json.dumps({**base, "tax": 259.25, "total": 1493.75}), spec).valid  # lines + tax
    assert parse_output(json.dumps({**base, "total": 1493.75}), spec).valid  # an unread tax can explain it
    # Subtotal + tax printed and not adding up: the total is flagged, nothing is fixed.
    off = parse_output(json.dumps({**base, "subtotal": 1234.5, "tax": 259.25, "total": 1439.75}), spec)
    assert off.field_errors == {"total": "is 1439.75 but subtotal 1234.5 + tax 259.25 add up to 1493.75"}
    assert off.partial["total"] == 1439.75


def test_a_user_schema_declares_what_adds_to_its_total():
    from pydantic import BaseModel

    from invoice_vlm import SchemaSpec
    from invoice_vlm.schemas.fields import field_info

    class Order(BaseModel):
        net: float = Field(json_schema_extra=field_info(adds_to="grand_total"))
        shipping: float | None = Field(default=None, json_schema_extra=field_info(adds_to="grand_total"))
        discount: float | None = Field(
            default=None, json_schema_extra=field_info(adds_to="grand_total", subtracts=True)
        )
        grand_total: float

    spec = SchemaSpec(name="order", model=Order, prompt="extract order")
    assert check_sums({"net": 100, "shipping": 5, "discount": 10, "grand_total": 95}, spec) == {}
    assert check_sums({"net": 100, "shipping": 5, "discount": 10, "grand_total": 105}, spec) == {
        "grand_total": "is 105 but net 100 + shipping 5 - discount 10 add up to 95"
    }
