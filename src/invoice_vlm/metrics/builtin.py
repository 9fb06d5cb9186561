"""The built-in metrics of every evaluation report, one class each (registered through entry points)."""

from __future__ import annotations

from typing import Any, ClassVar

from invoice_vlm.metrics.base import Case, Metric

__all__ = [
    "Bleu",
    "CharacterErrorRate",
    "DocumentAccuracy",
    "FieldAccuracy",
    "FieldF1",
    "JsonValid",
    "SchemaValid",
    "TedAccuracy",
    "Ter",
]


class FieldAccuracy(Metric):
    """Share of all reference fields that came back exactly right (after normalisation by field kind)."""

    name = "field_accuracy"
    label = "field accuracy"
    description = "share of all fields that came back exactly right"
    order = 10

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        return case.fields["field_accuracy"], {"per_field": case.fields["per_field"]}


class DocumentAccuracy(Metric):
    """Share of documents with every field right and nothing invented."""

    name = "document_accuracy"
    label = "document accuracy"
    description = "share of documents with every field right"
    order = 20

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        return case.fields["document_accuracy"], {}


class TedAccuracy(Metric):
    """Donut's normalized tree-edit-distance accuracy."""

    name = "ted_accuracy"
    label = "nTED accuracy"
    description = "Donut's tree-edit-distance accuracy"
    order = 30

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        from invoice_vlm.metrics.donut import ted_accuracy

        result = ted_accuracy(case.predictions, case.references)
        return result["ted_accuracy"], {"per_document": result["per_document"]}


class FieldF1(Metric):
    """Donut's micro F1 over (field, value) pairs."""

    name = "field_f1"
    label = "field F1"
    description = "Donut's micro F1 over (field, value) pairs"
    order = 40

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        from invoice_vlm.metrics.donut import field_f1

        result = field_f1(case.predictions, case.references)
        return result["f1"], {k: v for k, v in result.items() if k != "f1"}


class JsonValid(Metric):
    """Share of outputs holding a JSON object."""

    name = "json_valid_rate"
    label = "JSON valid"
    description = "share of outputs holding a JSON object"
    order = 50

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        return sum(p is not None for p in case.predictions) / len(case.targets), {}


class SchemaValid(Metric):
    """Share of outputs that also validate against the schema."""

    name = "schema_valid_rate"
    label = "schema valid"
    description = "share that also validate against the schema"
    order = 60

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        return sum(p.valid for p in case.parsed) / len(case.targets), {}


class CharacterErrorRate(Metric):
    """Edits to turn each value into the reference's, over the reference's characters."""

    name = "character_error_rate"
    label = "value CER"
    description = "character error rate over field values"
    higher_is_better = False
    order = 70

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        return case.fields["character_error_rate"], {}


class Bleu(Metric):
    """BLEU of the raw text in 0..1, exactly as the ``evaluate`` library (and the reference card) reports it."""

    name = "bleu"
    label = "BLEU"
    description = "n-gram overlap of the raw text (0..1), as model cards report it"
    order = 80
    requires: ClassVar[tuple[str, ...]] = ("sacrebleu",)
    max_order: ClassVar[int] = 4

    def settings(self) -> str:
        return f"tok:13a|smooth:none|max_order:{self.max_order}|bp:shortest-ref"

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        from invoice_vlm.metrics.text import bleu

        result = bleu(case.raw_texts, case.targets, max_order=self.max_order)
        return result["bleu"], result


class Ter(Metric):
    """TER of the raw text in percent, lower is better, as the ``evaluate`` library reports it."""

    name = "ter"
    label = "TER"
    description = "edit rate of the raw text in percent, lower is better"
    higher_is_better = False
    digits = 2
    order = 90
    requires: ClassVar[tuple[str, ...]] = ("sacrebleu",)

    def settings(self) -> str:
        return "case:insensitive|norm:no|punct:kept"

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        from invoice_vlm.metrics.text import ter

        result = ter(case.raw_texts, case.targets)
        return result["score"], result
