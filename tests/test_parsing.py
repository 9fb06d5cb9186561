from __future__ import annotations

import json

import pytest

from invoice_vlm import get_schema
from invoice_vlm.parsing import find_json_object, parse_output

PALLET = {
    "route": "V183-RZ-924",
    "pallet_number": "4",
    "delivery_date": "3/14/2024",
    "load": "21",
    "dock": "D7",
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


def test_clean_output_validates():
    text = json.dumps(PALLET)
    r = parse_output(text, get_schema("pallet_label"), source="a.png")
    assert r.valid and r.errors == [] and r.to_dict() == PALLET and r.raw_text == text and r.source == "a.png"


@pytest.mark.parametrize(
    "wrap",
    [
        "```json\n{}\n```",
        "Here is the data: {} Thanks.",
        "{}\n",
    ],
)
def test_object_found_inside_text(wrap):
    text = wrap.replace("{}", json.dumps(PALLET))
    r = parse_output(text, get_schema("pallet_label"))
    assert r.valid, r.errors
    assert r.raw_text == text


def test_trailing_commas_are_repaired():
    text = json.dumps(PALLET)[:-1] + ",}"
    text = text.replace('"layers": "1"}]', '"layers": "1"},]')
    found = find_json_object(text)
    assert found.value == PALLET
    assert len(found.repairs) == 2


def test_truncated_output_is_not_guessed():
    text = json.dumps(PALLET)[:200]
    r = parse_output(text, get_schema("pallet_label"))
    assert not r.valid and r.data is None and r.to_dict() == {}
    assert "cut off" in r.errors[0] and "max_new_tokens" in r.errors[0]
    assert r.raw_text == text


def test_schema_errors_name_fields_and_values():
    bad = dict(PALLET, total_cases=True, extra_field="x")
    del bad["route"]
    r = parse_output(json.dumps(bad), get_schema("pallet_label"))
    assert not r.valid
    joined = "\n".join(r.errors)
    assert "route: Field required" in joined
    assert "total_cases: Input should be a valid string (got True)" in joined
    assert "extra_field: Extra inputs are not permitted" in joined
    # What was read is kept beside the errors, per field, so a reviewer sees which fields failed.
    assert set(r.field_errors) == {"route", "total_cases", "extra_field"}
    assert r.partial is not None and r.partial["shipment_id"] == PALLET["shipment_id"]
    assert r.to_dict() == {} and r.data is None


def test_no_json_and_bad_json():
    assert "no JSON object" in parse_output("nothing here", get_schema("invoice")).errors[0]
    r = parse_output('{"a" 1} junk', get_schema("invoice"))
    assert "not valid JSON" in r.errors[0] and "expected ':'" in r.errors[0]


def test_later_object_found_after_a_broken_one():
    text = '{"broken": } then ' + json.dumps(PALLET)
    assert parse_output(text, get_schema("pallet_label")).valid


def test_spans_and_confidence():
    text = '{"a": "xy", "b": [1, {"c": true}], "d": null}'
    found = find_json_object(text)
    assert text[slice(*found.spans["a"])] == "xy"
    assert text[slice(*found.spans["b[0]"])] == "1"
    assert text[slice(*found.spans["b[1].c"])] == "true"
    conf = [1.0] * len(text)
    start, _ = found.spans["a"]
    conf[start + 1] = 0.25  # the 'y'
    r = parse_output(
        json.dumps(PALLET), get_schema("pallet_label"), char_confidence=[0.9] * len(json.dumps(PALLET))
    )
    assert r.confidence["shipment_id"] == pytest.approx(0.9)
    assert r.confidence["products[1].cases"] == pytest.approx(0.9)
    assert len(r.confidence) == 14 + 2 * 4  # 14 top-level leaves + 4 leaves in each of 2 products
    from invoice_vlm.parsing import field_confidence

    assert field_confidence(found.spans, conf, len(text))["a"] == 0.25
