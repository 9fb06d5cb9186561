"""Extending invoice_vlm from outside the package, as a third-party package would.

A metric, a schema with its own synthetic templates, and a backend: each is one new definition here plus a
registration through entry points (monkeypatched, as if a package declared them), with no edit to invoice_vlm.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import random

import pytest
from pydantic import BaseModel, ConfigDict, Field

from invoice_vlm import Generation, SchemaSpec
from invoice_vlm.metrics import Metric
from invoice_vlm.schemas.fields import field_info

synth = pytest.importorskip("invoice_vlm.data.synth")
from invoice_vlm.data.synth.kit import SynthKit  # noqa: E402
from invoice_vlm.data.synth.page import Page  # noqa: E402

BUILTIN_METRICS = {
    name: f"invoice_vlm.metrics.builtin:{cls}"
    for name, cls in {
        "field_accuracy": "FieldAccuracy",
        "document_accuracy": "DocumentAccuracy",
        "bleu": "Bleu",
        "ter": "Ter",
    }.items()
}


# --- the plugin package's own code --------------------------------------------------------------------------------


class DateRight(Metric):
    """Share of documents whose invoice date is right: the one field an accounts team checks first."""

    name = "invoice_date_right"
    label = "date right"
    description = "share of documents whose invoice date is right"
    order = 15

    def measure(self, case):
        right = [
            bool(p) and p.get("invoice_date") == r.get("invoice_date")
            for p, r in zip(case.predictions, case.references, strict=True)
        ]
        return sum(right) / len(right), {"right": right}


class Ticket(BaseModel):
    model_config = ConfigDict(extra="forbid")

    number: str = Field(json_schema_extra=field_info("Ticket No.", "Ticket", kind="code"))
    amount: float = Field(json_schema_extra=field_info("Amount", "Betrag", kind="decimal"))


TICKET = SchemaSpec(name="ticket", model=Ticket, prompt="extract ticket in JSON format")


def sample_ticket(fake, rng: random.Random) -> dict:
    return {"number": f"T-{rng.randint(1000, 9999)}", "amount": round(rng.uniform(1, 99), 2)}


def draw_ticket(spec, data, rng):
    page = Page(width=520)
    page.text(page.margin, "PARKING", 34, bold=True)
    page.skip(70)
    page.text(page.margin, f"Ticket No.: {data['number']}", 24)
    page.skip(44)
    page.text(page.margin, f"Amount: {data['amount']:.2f}", 24)
    page.skip(44)
    return page.finish()


TICKET_SYNTH = SynthKit(sample_ticket, {"plain": draw_ticket})


class EchoBackend:
    """A backend written to the contract: one generate() and a from_pretrained() to be loadable by name."""

    name = "echo"

    @classmethod
    def from_pretrained(cls, model=None, *, adapter=None, device=None, dtype=None, **options):
        return cls()

    def generate(self, images, request):
        assert request.schema.name == "ticket" and request.prompt == request.schema.prompt
        return [Generation('{"number": "T-77", "amount": "12,50"}') for _ in images]


class OldEchoBackend(EchoBackend):
    """The same backend written to the old contract: the prompt as text, text back."""

    def generate(self, images, prompt):
        return ['{"number": "T-77", "amount": "12,50"}' for _ in images]


# --- registration through entry points ------------------------------------------------------------------------------


@pytest.fixture
def plugin_package(monkeypatch, fresh_registries):
    groups = {
        "invoice_vlm.schemas": {
            "invoice": "invoice_vlm.schemas.invoice:INVOICE",
            "ticket": "tests.test_plugins:TICKET",
        },
        "invoice_vlm.metrics": {**BUILTIN_METRICS, "invoice_date_right": "tests.test_plugins:DateRight"},
        "invoice_vlm.synth": {"ticket": "tests.test_plugins:TICKET_SYNTH"},
        "invoice_vlm.backends": {
            "echo": "tests.test_plugins:EchoBackend",
            "old_echo": "tests.test_plugins:OldEchoBackend",
            "ocr": "invoice_vlm.backends.ocr:OCRBackend",
        },
    }
    table = {
        g: [md.EntryPoint(name=n, value=v, group=g) for n, v in eps.items()] for g, eps in groups.items()
    }
    real = md.entry_points

    def entry_points(
        **selection,
    ):  # our groups as the plugin package declares them; anything else as installed
        group = selection.get("group")
        return table[group] if group in table else real(**selection)

    monkeypatch.setattr(md, "entry_points", entry_points)


def test_a_new_metric_is_one_class(plugin_package):
    from invoice_vlm.evaluation import score

    target = json.dumps({"invoice_number": "1", "invoice_date": "2024-03-03", "total": 10.0})
    wrong = json.dumps({"invoice_number": "1", "invoice_date": "2024-03-04", "total": 10.0})
    report = score([target, wrong], [target, target], "invoice")
    assert report.metrics["invoice_date_right"] == 0.5
    assert list(report.metrics)[:3] == ["field_accuracy", "invoice_date_right", "document_accuracy"]
    markdown = report.to_markdown()
    assert "| date right | 0.5000 | share of documents whose invoice date is right |" in markdown
    assert report.signatures["invoice_date_right"].startswith("invoice_date_right|invoice_vlm:")
    assert "tok:13a|smooth:none" in report.signatures["bleu"] and "sacrebleu:" in report.signatures["bleu"]


def test_a_new_schema_brings_its_own_templates(plugin_package, tmp_path):
    from invoice_vlm.data import load

    doc = synth.generate("ticket", 3)
    assert doc.template == "plain" and TICKET.validate_data(doc.data)
    assert synth.TEMPLATES["ticket"] == {"plain": draw_ticket}
    synth.write_dataset("ticket", 4, tmp_path / "tickets", split=(0.5, 0.0, 0.5))
    assert len(load(tmp_path / "tickets", schema="ticket")["train"]) == 2
    with pytest.raises(ValueError, match="No synthetic data for schema 'invoice'"):
        synth.generate("invoice", 1)  # this test's plugin set has no kit for it


def test_a_new_backend_runs_through_the_cli(plugin_package, tmp_path, capsys):
    from PIL import Image

    from invoice_vlm.cli import main

    Image.new("RGB", (80, 60), "white").save(tmp_path / "t.png")
    code = main(
        ["extract", str(tmp_path / "t.png"), "--backend", "echo", "--schema", "ticket", "--no-progress"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    assert record["valid"] and record["data"] == {"number": "T-77", "amount": 12.5}
    assert record["printed"] == {"amount": "12,50"}


def test_a_backend_to_the_old_contract_gets_one_clear_error(plugin_package, tmp_path, capsys):
    from PIL import Image

    from invoice_vlm.cli import main

    Image.new("RGB", (80, 60), "white").save(tmp_path / "t.png")
    code = main(
        ["extract", str(tmp_path / "t.png"), "--backend", "old_echo", "--schema", "ticket", "--no-progress"]
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "old backend contract generate(images, prompt)" in err
    assert "generate(images, request) -> list[Generation]" in err and "Traceback" not in err


@pytest.mark.slow
def test_the_offline_reader_reads_a_plugin_schema(plugin_package):
    pytest.importorskip("rapidocr")
    from invoice_vlm import InvoiceExtractor

    ex = InvoiceExtractor.from_pretrained(backend="ocr", schema="ticket")
    for seed in range(3):
        doc = synth.generate("ticket", seed, style="photo")
        result = ex.extract(doc.image)
        assert result.valid and result.to_dict() == doc.data, (result.field_errors, result.partial)
