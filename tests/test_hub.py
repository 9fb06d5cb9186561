"""Local first: paths never go to the Hugging Face Hub, and an unreachable Hub fails at once with advice."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from invoice_vlm.backends._hf import is_local


@pytest.mark.parametrize(
    ("ref", "local"),
    [
        ("google/paligemma-3b-pt-448", True),  # True here because the test makes a 'google' folder below
        ("./model", True),
        ("~/models/x", True),
        ("/abs/path", True),
        ("a/b/c", True),
        ("C:\\models\\x", True),
        ("justaname", True),
        ("org/name", False),
    ],
)
def test_what_looks_like_a_path(tmp_path, monkeypatch, ref, local):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "google").mkdir()
    assert is_local(ref) is local


def test_a_mistyped_local_folder_is_not_looked_up_on_the_hub(tmp_path, monkeypatch, capsys):
    pytest.importorskip("datasets")
    from invoice_vlm.cli import main
    from invoice_vlm.data import load
    from invoice_vlm.errors import DatasetError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # any Hub call would fail loudly
    with pytest.raises(DatasetError, match="'data/palets' does not exist here"):
        load("data/palets", schema="pallet_label")
    (tmp_path / "x.png").write_bytes(b"")
    code = main(["extract", "x.png", "--model", "data/palets", "--schema", "pallet_label", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--model data/palets does not exist (a local path, so the Hub was not asked)" in err


@pytest.mark.parametrize("what", ["model", "dataset"])
def test_an_unreachable_hub_fails_fast_with_advice(what):
    pytest.importorskip("transformers")
    call = (
        "InvoiceExtractor.from_pretrained('acme/paligemma-pallets', schema='pallet_label')"
        if what == "model"
        else "load('acme/pallet-labels', schema='pallet_label')"
    )
    code = (
        "from invoice_vlm import InvoiceExtractor\n"
        "from invoice_vlm.data import load\n"
        "from invoice_vlm.errors import InvoiceVLMError\n"
        "try:\n"
        f"    {call}\n"
        "except InvoiceVLMError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens there: the network is down
    start = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    ).stdout
    assert (
        time.monotonic() - start < 60
    )  # one attempt, not minutes of retries (the import of torch dominates)
    assert "Cannot reach the Hugging Face Hub" in out and "HF_HUB_OFFLINE=1" in out, out
