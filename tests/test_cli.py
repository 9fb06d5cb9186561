from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from invoice_vlm.cli import main
from invoice_vlm.errors import install_command


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
            "unreadable",
            "data",
            "partial",
            "errors",
            "field_errors",
            "confidence",
            "printed",
            "evidence",
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
            "--model ./nope does not exist (a local path, so the Hub was not asked)",
        ),
        (["extract", "x.png", "--model", "./nope", "--schema", "palet"], "Unknown schema 'palet'"),
        (
            ["extract", "x.png", "--model", "./nope"],
            "--model ./nope does not exist",
        ),  # not hidden behind --schema
        (["extract", "x.png", "--model", "."], "--schema is needed (a registered name: invoice-vlm schemas)"),
    ],
)
def test_extract_cannot_run_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err


def test_missing_torch_offers_the_ocr_backend_and_the_cpu_build(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # as on a machine where only the ocr extra went in
    code, out, err = run(capsys, "extract", str(tmp_path / "x.png"), "--schema", "invoice")
    assert code == 2 and out == ""
    assert install_command("paligemma") in err and "torch is missing" in err
    assert (
        "--backend ocr" in err and "pip install torch --index-url https://download.pytorch.org/whl/cpu" in err
    )


@pytest.mark.parametrize(
    ("direct_url", "command"),
    [
        # from a clone, editable, asked from inside it / from elsewhere
        ({"url": "file://{cwd}", "dir_info": {"editable": True}}, "pip install -e '.[ocr]'"),
        (
            {"url": "file:///opt/src/invoice-vlm", "dir_info": {"editable": True}},
            "pip install -e '/opt/src/invoice-vlm[ocr]'",
        ),
        # a wheel on disk
        (
            {"url": "file:///tmp/dist/invoice_vlm-0.1.0-py3-none-any.whl", "archive_info": {}},
            "pip install '/tmp/dist/invoice_vlm-0.1.0-py3-none-any.whl[ocr]'",
        ),
        # from a package index: pip writes no direct_url.json
        (None, "pip install 'invoice-vlm[ocr]'"),
    ],
)
def test_install_hints_name_how_invoice_vlm_is_installed(monkeypatch, tmp_path, direct_url, command):
    import importlib.metadata

    from invoice_vlm.errors import MissingDependencyError

    class Dist:
        def read_text(self, name):
            assert name == "direct_url.json"
            if direct_url is None:
                return None
            return json.dumps({**direct_url, "url": direct_url["url"].format(cwd=tmp_path)})

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(importlib.metadata, "distribution", lambda name: Dist())
    assert install_command("ocr") == command
    assert str(MissingDependencyError("The OCR backend", "ocr", "rapidocr")).endswith(command)


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


def test_every_flag_has_help_that_shows_its_default():
    import argparse

    from invoice_vlm.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) >= {"extract", "schemas", "synth", "finetune", "evaluate", "score"}
    for name, sub in commands.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest} has no help"
            flags = action.option_strings
            takes_value = (
                flags and action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
            )
            if takes_value and not action.required:
                shown = "default" in action.help or "required" in action.help
                assert shown, f"{name} {flags[0]}: {action.help!r} shows no default"


# --- documents as they come: mixed batches, resumable output, safe folders, whole messages --------------------------

GOOD = json.dumps({"invoice_number": "A-1", "invoice_date": "2024-03-01", "total": 12.5})


@pytest.fixture
def fake_backend(tmp_path):
    from invoice_vlm.backends import backends
    from invoice_vlm.testing import FakeBackend

    answer = tmp_path / "answer.txt"
    answer.write_text(GOOD)
    backends.register("fake", FakeBackend, replace=True)
    yield ["--backend", "fake", "--model", str(answer), "--schema", "pallet_label", "--no-progress"]
    backends.unregister("fake")


def mixed_documents(folder):
    """Good and bad files of every kind, in a known order; returns (paths, expected sources)."""
    folder.mkdir(exist_ok=True)
    good = folder / "good.png"
    Image.new("RGB", (60, 40), "white").save(good)
    text = folder / "notes.jpg"
    text.write_text("not a photo")
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    tiff = folder / "two.tif"
    Image.new("RGB", (60, 40), "white").save(tiff, save_all=True, append_images=[Image.new("RGB", (60, 40))])
    pdf = folder / "three.pdf"
    pages = [Image.new("RGB", (200, 100), c) for c in ("white", "gray", "black")]
    pages[0].save(pdf, save_all=True, append_images=pages[1:])
    missing = folder / "missing.png"
    paths = [good, text, empty, tiff, pdf, missing]
    return [str(p) for p in paths]


def test_mixed_batch_one_result_each_in_order_with_and_without_pdf(
    tmp_path, capsys, fake_backend, monkeypatch
):
    from invoice_vlm import InvoiceExtractor
    from invoice_vlm.testing import FakeBackend

    docs = mixed_documents(tmp_path / "in")
    good, text, empty, tiff, pdf, missing = docs
    expected = [good, text, empty, f"{tiff}#page=1", f"{tiff}#page=2"]
    expected += [f"{pdf}#page={i}" for i in (1, 2, 3)] + [missing]
    ex = InvoiceExtractor(FakeBackend(GOOD), "pallet_label")
    assert [r.source for r in ex.extract_batch(docs, progress=False)] == expected
    code, out, err = run(capsys, "extract", *docs, *fake_backend)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [r["source"] for r in lines] == expected
    failed = {r["source"]: r["errors"][0] for r in lines if r["unreadable"]}
    assert all(r["raw_text"] == "" and not r["valid"] for r in lines if r["unreadable"])
    assert set(failed) == {text, empty, missing}
    assert (
        "is not a PNG, JPEG" in failed[text]
        and "is empty" in failed[empty]
        and "does not exist" in failed[missing]
    )
    assert "6 document(s), 6 result(s) read" in err and "3 could not be processed" in err
    # Without the pdf extra, the PDF alone fails, with the extra to install; everything else is read.
    monkeypatch.setitem(sys.modules, "pypdfium2", None)
    code, out, err = run(capsys, "extract", *docs, *fake_backend)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [r["source"] for r in lines] == [*expected[:5], pdf, missing]
    assert install_command("pdf") in lines[5]["errors"][0]
    assert [r.source for r in ex.extract_batch(docs, progress=False)] == [*expected[:5], pdf, missing]


def test_interrupted_output_resumes_to_the_same_jsonl(tmp_path, capsys, fake_backend):
    from invoice_vlm.backends import backends
    from invoice_vlm.testing import FakeBackend

    docs = []
    for i in range(5):
        path = tmp_path / f"d{i}.png"
        Image.new("RGB", (40 + i, 30), "white").save(path)
        docs.append(str(path))
    full = tmp_path / "full.jsonl"
    assert run(capsys, "extract", *docs, *fake_backend, "--output", str(full), "--batch-size", "1")[0] == 0

    class Interrupted(FakeBackend):
        calls_left = 3

        def generate(self, images, request):
            if Interrupted.calls_left == 0:
                raise KeyboardInterrupt
            Interrupted.calls_left -= 1
            return super().generate(images, request)

    backends.register("fake", Interrupted, replace=True)
    part = tmp_path / "part.jsonl"
    code, _, err = run(capsys, "extract", *docs, *fake_backend, "--output", str(part), "--batch-size", "1")
    assert code == 130 and "interrupted" in err
    assert len(part.read_text().splitlines()) == 3
    with part.open("a") as handle:
        handle.write('{"source": "cut off in the mid')  # the interruption cut a line
    code, _, err = run(capsys, "extract", *docs, *fake_backend, "--output", str(part))
    assert code == 2 and "--resume" in err and "--overwrite" in err  # nothing already done is lost
    backends.register("fake", FakeBackend, replace=True)
    code, _, err = run(capsys, "extract", *docs, *fake_backend, "--output", str(part), "--resume")
    assert code == 0 and "3 already in" in err
    assert part.read_text() == full.read_text()


def test_synth_refuses_a_folder_in_use(tmp_path, capsys, monkeypatch):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, err = run(capsys, "synth", "--n", "2", "--out", str(out), "--no-progress")
    assert code == 2 and "is not empty" in err and "--overwrite" in err and "overwrite=True" not in err
    assert run(capsys, "synth", "--n", "2", "--out", str(out), "--no-progress", "--overwrite")[0] == 0
    assert (out / "mine.txt").exists() and (out / "train" / "annotations.jsonl").exists()
    # A missing extra is found before any work (no progress bar, nothing written).
    monkeypatch.setitem(sys.modules, "faker", None)
    fresh = tmp_path / "fresh"
    code, _, err = run(capsys, "synth", "--n", "2", "--out", str(fresh))
    assert code == 2 and install_command("data") in err and "synth" not in err.split("error:")[0][:-13]
    assert not fresh.exists() and "%" not in err


def test_evaluate_checks_extras_before_loading_and_shows_every_problem(
    tmp_path, capsys, monkeypatch, fake_backend
):
    import invoice_vlm.extractor as extractor_module

    data = tmp_path / "ds" / "test"
    data.mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(data / "a.png")
    rows = [{"image": "a.png", "prefix": "p", "suffix": "not json"}] + [
        {"image": f"missing{i}.png", "prefix": "p", "suffix": "{}"} for i in range(30)
    ]
    (data / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = run(capsys, "evaluate", *fake_backend, "--data", str(tmp_path / "ds"))
    lines = err.strip().splitlines()
    assert code == 2 and "problem(s); fix them or pass --on-error skip" in lines[0]
    assert "annotations.jsonl:1" in lines[1] and len(lines) == 26 and "more line(s)" in lines[-1]
    monkeypatch.setitem(sys.modules, "sacrebleu", None)

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing extra was reported")

    monkeypatch.setattr(extractor_module.InvoiceExtractor, "from_pretrained", no_loading)
    code, _, err = run(capsys, "evaluate", *fake_backend, "--data", str(tmp_path / "ds"))
    assert code == 2 and install_command("metrics") in err


def test_a_bug_shows_its_traceback(monkeypatch):
    import invoice_vlm.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug, not a user's mistake")

    monkeypatch.setattr(cli, "_cmd_schemas", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["schemas"])


def test_no_progress_hides_model_loading_bars(capsys, tiny_model, tmp_path):
    path = tmp_path / "doc.png"
    Image.new("RGB", (60, 40), "white").save(path)
    args = [
        "--model",
        str(tiny_model),
        "--schema",
        "pallet_label",
        "--max-new-tokens",
        "4",
        "--no-constrained",
    ]
    code, _, err = run(capsys, "extract", str(path), *args, "--no-progress")
    assert code == 0 and "Loading" not in err and "it/s" not in err and "%|" not in err, err


def test_scoring_a_dataset_against_itself_is_perfect(tmp_path, capsys):
    pytest.importorskip("faker")
    pytest.importorskip("sacrebleu")
    assert run(capsys, "synth", "--n", "3", "--out", str(tmp_path / "d"), "--no-progress")[0] == 0
    rows = str(tmp_path / "d" / "train" / "annotations.jsonl")
    code, out, _ = run(capsys, "score", rows, rows)
    summary = json.loads(out)
    assert code == 0 and summary["field_accuracy"] == 1.0 and summary["document_accuracy"] == 1.0


def test_extract_queues_the_pages_that_need_a_person(tmp_path, capsys, fake_backend):
    """GOOD is an invoice: on the pallet_label schema it fails, so every readable page is queued; unreadable files
    are not (there is nothing to review); a result merged from several pages is queued with all of them."""
    from invoice_vlm.review import ReviewQueue

    docs = mixed_documents(tmp_path / "in")
    reviews = tmp_path / "reviews"
    code, _, err = run(
        capsys, "extract", *docs, *fake_backend, "--review-dir", str(reviews), "-o", str(tmp_path / "o.jsonl")
    )
    assert code == 1 and "6 result(s) queued for review" in err  # good.png, two.tif's 2 pages, three.pdf's 3
    queue = ReviewQueue(reviews)
    items = [queue.get(item_id) for item_id in queue.order()]
    assert sorted(item.source for item in items)[0].endswith("good.png")
    assert all(item.record["needs_review"] for item in items)
    code, out, err = run(capsys, "reviews", str(reviews))
    assert code == 0 and json.loads(out)["queue"] == {"left": 6, "accepted": 0, "total": 6, "skipped": 0}
    code, _, err = run(capsys, "extract", *docs, *fake_backend, "--review-dir", str(reviews))
    assert "0 result(s) queued for review" in err and "(6 already there, not queued again)" in err
    merged = ["--pages", "merge", "--review-dir", str(tmp_path / "merged")]
    code, _, err = run(capsys, "extract", docs[3], *fake_backend, *merged)
    assert "1 result(s) queued" in err  # the whole document, with both pages
    (merged_item,) = [
        ReviewQueue(tmp_path / "merged").get(i) for i in ReviewQueue(tmp_path / "merged").order()
    ]
    assert merged_item.pages == 2 and merged_item.page_path(tmp_path / "merged", 1).is_file()
    code, _, err = run(capsys, "extract", *docs, *fake_backend, "--review-dir", str(reviews), "--ray")
    assert code == 2 and "--review-dir" in err
    (tmp_path / "file").write_text("")
    code, _, err = run(capsys, "extract", docs[0], *fake_backend, "--review-dir", str(tmp_path / "file"))
    assert code == 2 and "is a file" in err
