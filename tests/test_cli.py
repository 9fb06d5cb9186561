from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from invoice_vlm.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schemas_text_and_json(capsys):
    code, out, _ = run(capsys, "schemas")
    assert code == 0 and "pallet_label" in out and "prompt: extract Document data in JSON format" in out
    code, out, _ = run(capsys, "schemas", "--json")
    names = [s["name"] for s in json.loads(out)]
    assert names == ["invoice", "pallet_label"]


@pytest.mark.slow
def test_extract_with_tiny_model(capsys, tiny_model, tmp_path):
    docs = []
    for i in range(3):
        path = tmp_path / f"doc{i}.png"
        Image.new("RGB", (100 + i, 80), "white").save(path)
        docs.append(str(path))
    out_file = tmp_path / "out" / "results.jsonl"
    code, out, err = run(
        capsys,
        "extract",
        *docs,
        "--model",
        str(tiny_model),
        "--schema",
        "pallet_label",
        "--batch-size",
        "2",
        "--output",
        str(out_file),
        "--no-progress",
    )
    assert code == 0, err
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["source"] for r in records] == docs
    assert all(
        set(r)
        == {
            "source",
            "valid",
            "data",
            "partial",
            "errors",
            "field_errors",
            "confidence",
            "printed",
            "raw_text",
        }
        for r in records
    )
    assert "3 document(s)" in err
    # stdout output and a missing document: results for the rest, exit 1, the reason on stderr.
    code, out, err = run(
        capsys,
        "extract",
        docs[0],
        str(tmp_path / "missing.png"),
        "--model",
        str(tiny_model),
        "--schema",
        "pallet_label",
        "--no-progress",
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(lines) == 2 and "does not exist" in lines[1]["errors"][0]
    assert "1 could not be processed" in err


def test_extract_constrained_flags(capsys, tiny_model, tmp_path):
    pytest.importorskip("xgrammar")
    path = tmp_path / "doc.png"
    Image.new("RGB", (90, 70), "white").save(path)
    common = [str(path), "--model", str(tiny_model), "--schema", "pallet_label", "--no-progress"]
    code, out, err = run(capsys, "extract", *common, "--constrained", "--max-new-tokens", "8")
    constrained = json.loads(out)
    assert code == 0, err
    assert constrained["raw_text"].startswith('{"route": "')  # the schema's first key, as trained
    assert "cut off" in constrained["errors"][0]  # 8 tokens cannot hold a label: reported, never completed
    code, out, err = run(capsys, "extract", *common, "--no-constrained", "--max-new-tokens", "8")
    assert code == 0 and not json.loads(out)["raw_text"].startswith(
        '{"route"'
    )  # random weights, unconstrained


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["extract", "x.png", "--model", "./nope", "--schema", "pallet_label"],
            "does not exist here",
        ),
        (["extract", "x.png", "--model", "./nope", "--schema", "palet"], "Unknown schema 'palet'"),
        (["extract", "x.png", "--model", "./nope"], "Pass schema="),
    ],
)
def test_extract_cannot_run_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_console_script_help():
    out = subprocess.run(
        [sys.executable, "-m", "invoice_vlm.cli", "extract", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "--batch-size" in out.stdout


def test_synth_writes_a_loadable_dataset(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "synth",
        "--schema",
        "invoice",
        "--n",
        "5",
        "--out",
        str(tmp_path / "d"),
        "--seed",
        "2",
        "--style",
        "photo",
        "--split",
        "0.6,0.2,0.2",
        "--no-progress",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["splits"] == {"train": 3, "valid": 1, "test": 1}
    from invoice_vlm.data import load

    assert load(tmp_path / "d", schema="invoice")["train"].num_rows == 3


def test_synth_bad_split_is_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["synth", "--n", "2", "--out", str(tmp_path), "--split", "0.5,0.5"])
    assert info.value.code == 2
    assert "three fractions" in capsys.readouterr().err
    code, _, err = run(capsys, "synth", "--n", "2", "--out", str(tmp_path), "--split", "0.5,0.6,0.1")
    assert code == 2 and "summing to 1" in err
