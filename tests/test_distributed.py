"""Batch extraction on a local Ray (2 CPUs): 60 mixed documents, bad ones included, one row each, as extract_batch."""

from __future__ import annotations

import functools
import json
import sys

import pytest
from PIL import Image

pytestmark = pytest.mark.slow

ray = pytest.importorskip("ray")
pytest.importorskip("pyarrow")

from invoice_vlm import InvoiceExtractor  # noqa: E402
from invoice_vlm.distributed import COLUMNS, extract_files, list_sources  # noqa: E402
from invoice_vlm.testing import FakeBackend  # noqa: E402

ANSWER = json.dumps({"route": "R-1", "pallet_number": "4", "shipment_id": "P1"})


def corpus(folder):
    folder.mkdir()
    files = []
    for i in range(50):
        path = folder / f"good{i:02d}.png"
        Image.new("RGB", (60 + i, 40), "white").save(path)
        files.append(path)
    for i in range(4):
        (folder / f"notes{i}.jpg").write_text("not a photo")
        files.append(folder / f"notes{i}.jpg")
    for i in range(2):
        (folder / f"empty{i}.png").write_bytes(b"")
        files.append(folder / f"empty{i}.png")
    for i in range(2):
        path = folder / f"two{i}.tif"
        Image.new("RGB", (50, 50), "white").save(
            path, save_all=True, append_images=[Image.new("RGB", (50, 50))]
        )
        files.append(path)
    return [str(f) for f in files] + [str(folder / "missing0.png"), str(folder / "missing1.png")]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def test_sixty_mixed_documents_one_row_each_like_extract_batch(local_ray, tmp_path):
    files = corpus(tmp_path / "in")
    assert len(files) == 60
    make = functools.partial(InvoiceExtractor, FakeBackend(ANSWER), "pallet_label")
    out = tmp_path / "rows.jsonl"
    counts = extract_files(files, out, make_extractor=make, concurrency=2, num_cpus=0.5, files_per_task=8)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = make().extract_batch(files, progress=False)
    assert counts == {"sources": 60, "skipped": 0, "rows": 62, "errors": 8}
    assert [r["source"] for r in rows] == [e.source for e in expected]
    for row, result in zip(rows, expected, strict=True):
        record = result.to_record()
        assert set(row) == set(COLUMNS)
        assert row["valid"] == record["valid"] and json.loads(row["partial"]) == record["partial"]
        assert (row["error"] is not None) == record["unreadable"] == row["unreadable"]
    # A rerun skips what is written; Parquet gives the same rows.
    again = extract_files(files, out, make_extractor=make, concurrency=2, num_cpus=0.5)
    assert again["skipped"] == 60 and again["rows"] == 0 and len(out.read_text().splitlines()) == 62
    import pyarrow.parquet as pq

    extract_files([str(tmp_path / "in")], tmp_path / "rows.parquet", make_extractor=make, num_cpus=0.5)
    table = pq.read_table(tmp_path / "rows.parquet")
    assert table.num_rows == 60 and table.column_names == list(COLUMNS)  # the folder: no missing files


def test_sources_folders_and_globs(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("x.png", "y.pdf", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(b"")
    assert list_sources([tmp_path / "a"]) == [str(tmp_path / "a" / "x.png"), str(tmp_path / "a" / "y.pdf")]
    assert list_sources([str(tmp_path / "a" / "*.png"), "nope.png"]) == [
        str(tmp_path / "a" / "x.png"),
        "nope.png",
    ]


def test_import_invoice_vlm_does_not_import_ray():
    import subprocess

    code = "import sys, invoice_vlm, invoice_vlm.cli; print('ray' in sys.modules, 'vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.split() == [
        "False",
        "False",
    ]


def test_cli_ray_writes_rows_resumes_and_overwrites(local_ray, tmp_path, capsys):
    """``invoice-vlm extract FOLDER --ray``: the OCR backend in a Ray actor, the example label read as the CLI reads it."""
    import shutil
    from pathlib import Path

    from invoice_vlm.cli import EXIT_PARTIAL, main

    examples = Path(__file__).resolve().parents[1] / "examples"
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(examples / "pallet_label.jpg", folder / "a.jpg")
    (folder / "b.png").write_bytes(b"")
    out = tmp_path / "rows.jsonl"
    argv = [
        "extract",
        str(folder),
        "--ray",
        "--backend",
        "ocr",
        "--schema",
        "pallet_label",
        "--output",
        str(out),
    ]
    assert main([*argv, "--num-cpus", "1", "--no-progress"]) == EXIT_PARTIAL
    rows = {Path(r["source"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"a.jpg", "b.png"}
    assert json.loads(rows["a.jpg"]["data"]) == json.loads((examples / "pallet_label.json").read_text())
    assert rows["a.jpg"]["error"] is None and "empty" in rows["b.png"]["error"]
    assert "2 source(s): 2 row(s)" in capsys.readouterr().err
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err  # never overwritten silently
    assert main([*argv, "--resume"]) == 0
    assert "2 already there, skipped" in capsys.readouterr().err and len(out.read_text().splitlines()) == 2
    assert main([*argv, "--overwrite"]) == EXIT_PARTIAL and len(out.read_text().splitlines()) == 2
    assert (
        main(["extract", str(folder), "--concurrency", "2", "--backend", "ocr", "--schema", "pallet_label"])
        == 2
    )
    assert "--concurrency only apply with --ray" in capsys.readouterr().err
    assert main(["extract", str(folder), "--ray", "--backend", "ocr", "--schema", "pallet_label"]) == 2
    assert "--ray writes rows to --output" in capsys.readouterr().err
    typo = [
        "extract",
        str(folder),
        "--ray",
        "--schema",
        "palet_label",
        "--output",
        str(tmp_path / "typo.jsonl"),
    ]
    assert main(typo) == 2 and "pallet_label" in capsys.readouterr().err  # checked before any actor starts
    assert not (tmp_path / "typo.jsonl").exists()
