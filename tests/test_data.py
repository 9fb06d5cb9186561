from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from invoice_vlm import get_schema
from invoice_vlm.data import load, read_records
from invoice_vlm.data.synth import TEMPLATES, generate, sample, write_dataset
from invoice_vlm.errors import DatasetError, InvoiceVLMWarning

from .test_parsing import PALLET

datasets = pytest.importorskip("datasets")


def _image(path, color="white"):
    Image.new("RGB", (64, 48), color).save(path)


def test_generator_is_deterministic_and_valid(tmp_path):
    a = write_dataset("pallet_label", 6, tmp_path / "a", seed=3, style="mixed")
    b = write_dataset("pallet_label", 6, tmp_path / "b", seed=3, style="mixed")
    assert a == b == {"train": 5, "valid": 1}  # round(6 * 0.1) == 1, and the rest
    for split in a:
        assert (tmp_path / "a" / split / "annotations.jsonl").read_bytes() == (
            tmp_path / "b" / split / "annotations.jsonl"
        ).read_bytes()
    c = write_dataset("pallet_label", 6, tmp_path / "c", seed=4)
    assert (tmp_path / "c" / "train" / "annotations.jsonl").read_bytes() != (
        tmp_path / "a" / "train" / "annotations.jsonl"
    ).read_bytes()
    assert sum(c.values()) == 6


@pytest.mark.parametrize("schema", ["pallet_label", "invoice"])
def test_sampled_values_validate_and_add_up(schema):
    spec = get_schema(schema)
    for seed in range(25):
        data = sample(schema, seed)
        spec.validate_data(data)
        if schema == "pallet_label":
            for key, total in (
                ("cases", "total_cases"),
                ("sales_units", "total_units"),
                ("layers", "total_layers"),
            ):
                assert int(data[total]) == sum(int(p[key]) for p in data["products"])
            assert len(data["shipment_id"]) == 12 and data["shipment_id"][0] == "P"
            assert len(data["asn_number"]) == 10 and data["asn_number"].isdigit()
            month, _day, year = data["delivery_date"].split("/")
            assert 1 <= int(month) <= 12 and len(year) == 4 and not month.startswith("0")
            assert len(data["printed_date"]) == len("03/10/2024 14:05")
        else:
            for item in data["line_items"]:
                assert item["amount"] == pytest.approx(item["quantity"] * item["unit_price"], abs=0.006)
            assert data["subtotal"] == pytest.approx(sum(i["amount"] for i in data["line_items"]), abs=0.01)
            assert data["total"] == pytest.approx(data["subtotal"] + data["tax"], abs=0.01)


@pytest.mark.parametrize("schema", ["pallet_label", "invoice"])
def test_every_template_renders_in_both_styles(schema):
    assert len(TEMPLATES[schema]) >= 3
    for template in TEMPLATES[schema]:
        clean = generate(schema, 1, template=template)
        photo = generate(schema, 1, template=template, style="photo")
        assert clean.template == photo.template == template
        assert clean.image.mode == photo.image.mode == "RGB"
        assert photo.image.size != clean.image.size  # the photo shows background around the sheet
        assert generate(schema, 1, template=template).image.tobytes() == clean.image.tobytes()


def test_generated_folder_loads(tmp_path):
    write_dataset("invoice", 10, tmp_path / "inv", seed=0, style="clean")
    ds = load(tmp_path / "inv", schema="invoice")
    assert set(ds) == {"train", "valid", "test"}
    row = ds["train"][0]
    assert isinstance(row["image"], Image.Image)
    assert row["prefix"] == "extract invoice data in JSON format"
    get_schema("invoice").validate_data(json.loads(row["target"]))


def test_roboflow_flat_layout(tmp_path):
    _image(tmp_path / "a.jpg")
    _image(tmp_path / "b.jpg")
    for split, name in (("train", "a.jpg"), ("valid", "b.jpg")):
        row = {"image": name, "prefix": "extract Document data in JSON format", "suffix": json.dumps(PALLET)}
        (tmp_path / f"_annotations.{split}.jsonl").write_text(json.dumps(row) + "\n")
    ds = load(tmp_path, schema="pallet_label")
    assert set(ds) == {"train", "valid"}
    assert json.loads(ds["valid"][0]["target"]) == PALLET


def test_donut_layout(tmp_path):
    (tmp_path / "train").mkdir()
    _image(tmp_path / "train" / "x.png")
    row = {"file_name": "x.png", "ground_truth": json.dumps({"gt_parse": PALLET})}
    (tmp_path / "train" / "metadata.jsonl").write_text(json.dumps(row) + "\n")
    ds = load(tmp_path, schema="pallet_label")
    assert ds["train"][0]["prefix"] == "extract Document data in JSON format"
    assert json.loads(ds["train"][0]["target"]) == PALLET


def test_saved_hf_dataset_with_named_columns(tmp_path):
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as ImageFeature

    _image(tmp_path / "p.png")
    features = Features({"scan": ImageFeature(), "json_out": Value("string")})
    ds = Dataset.from_dict(
        {"scan": [str(tmp_path / "p.png")] * 2, "json_out": [json.dumps(PALLET)] * 2}, features=features
    )
    DatasetDict({"train": ds, "test": ds}).save_to_disk(tmp_path / "hf")
    loaded = load(tmp_path / "hf", schema="pallet_label", image_column="scan", target_column="json_out")
    assert loaded["test"].column_names == ["image", "prefix", "target"]
    assert isinstance(loaded["test"][0]["image"], Image.Image)
    with pytest.raises(DatasetError, match="name the image and JSON columns"):
        load(tmp_path / "hf", schema="pallet_label")


def _bad_dataset(root):
    train = root / "train"
    train.mkdir(parents=True)
    _image(train / "ok.png")
    (train / "broken.png").write_bytes(b"not a png")
    (root / "outside.png").write_bytes(b"")
    wrong = dict(PALLET, total_cases=15)
    rows = [
        {"image": "ok.png", "prefix": "p", "suffix": json.dumps(PALLET)},  # line 1: fine
        {"image": "ok.png", "prefix": "p", "suffix": "{not json"},  # line 2
        {"image": "ok.png", "prefix": "p", "suffix": json.dumps(wrong)},  # line 3
        {"image": "missing.png", "prefix": "p", "suffix": json.dumps(PALLET)},  # line 4
        {"image": "broken.png", "prefix": "p", "suffix": json.dumps(PALLET)},  # line 5
        {"image": "../outside.png", "prefix": "p", "suffix": json.dumps(PALLET)},  # line 6
        {"image": "/etc/passwd", "prefix": "p", "suffix": json.dumps(PALLET)},  # line 7
    ]
    lines = [json.dumps(r) for r in rows] + ["this line is not json"]  # line 8
    (train / "annotations.jsonl").write_text("\n".join(lines) + "\n")
    return train / "annotations.jsonl"


def test_every_problem_is_named_with_its_line(tmp_path):
    file = _bad_dataset(tmp_path)
    with pytest.raises(DatasetError) as info:
        load(tmp_path, schema="pallet_label")
    problems = {p.line: p.message for p in info.value.problems}
    assert set(problems) == {2, 3, 4, 5, 6, 7, 8}
    assert all(p.file == str(file) for p in info.value.problems)
    assert "not valid JSON" in problems[2]
    assert "total_cases: Input should be a valid string" in problems[3]
    assert "'missing.png' does not exist" in problems[4]
    assert "cannot be read" in problems[5]
    assert "leaves the dataset folder" in problems[6] and "leaves the dataset folder" in problems[7]
    assert "not a JSON object" in problems[8]
    assert f"{file}:3:" in str(info.value)


def test_skip_drops_bad_rows_with_a_count(tmp_path):
    _bad_dataset(tmp_path)
    with pytest.warns(InvoiceVLMWarning, match="Skipped 7 bad row"):
        ds = load(tmp_path, schema="pallet_label", on_error="skip")
    assert ds["train"].num_rows == 1


def test_symlink_out_of_the_folder_is_refused(tmp_path):
    root = tmp_path / "ds"
    (root / "train").mkdir(parents=True)
    _image(tmp_path / "secret.png")
    (root / "train" / "link.png").symlink_to(tmp_path / "secret.png")
    row = {"image": "link.png", "prefix": "p", "suffix": json.dumps(PALLET)}
    (root / "train" / "annotations.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DatasetError, match="resolves outside the dataset folder"):
        load(root, schema="pallet_label")


def test_no_dataset_says_what_was_expected(tmp_path):
    with pytest.raises(DatasetError, match="expected <split>/annotations.jsonl"):
        load(tmp_path, schema="pallet_label")


def test_records_keep_the_prefix_as_labelled(tmp_path):
    write_dataset("pallet_label", 3, tmp_path / "d", seed=1, split=(1.0, 0.0, 0.0))
    shutil.copy(tmp_path / "d" / "train" / "annotations.jsonl", tmp_path / "orig.jsonl")
    splits, problems = read_records(tmp_path / "d", "pallet_label")
    assert problems == [] and list(splits) == ["train"] and len(splits["train"]) == 3
    assert {r.prefix for r in splits["train"]} == {"extract Document data in JSON format"}
