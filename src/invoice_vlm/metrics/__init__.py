"""Metrics: BLEU and TER as the reference model card reports them, and field-level scores that catch what BLEU hides.

- `bleu`, `ter`: the keys and values of the Hugging Face ``evaluate`` library's ``bleu`` and ``ter`` metrics (the shape
  of the reference card's numbers), computed with sacrebleu.
- `field_accuracy`: share of the reference's leaf fields that came back right, per field and per document, with list
  items (products, line items) matched by best assignment.
- `ted_accuracy`, `field_f1`: Donut's normalized-tree-edit-distance accuracy and micro field F1 (``JSONParseEvaluator``),
  comparable with published Donut-style results.
- `validity_rates`, `character_error_rate`.

Everything but BLEU/TER is pure Python; sacrebleu is imported only when those two run.

Behind the functions, each number of an evaluation report is a `Metric` object in a registry (`metrics.base`): a
new metric is one class and a registration, and every `Score` carries a signature.
"""

from __future__ import annotations

from invoice_vlm.metrics.base import Case, Metric, Score, get_metric, list_metrics, register_metric
from invoice_vlm.metrics.donut import field_f1, ted_accuracy
from invoice_vlm.metrics.fields import character_error_rate, field_accuracy, normalize_value, validity_rates
from invoice_vlm.metrics.text import bleu, ter

__all__ = [
    "Case",
    "Metric",
    "Score",
    "bleu",
    "character_error_rate",
    "field_accuracy",
    "field_f1",
    "get_metric",
    "list_metrics",
    "normalize_value",
    "register_metric",
    "ted_accuracy",
    "ter",
    "validity_rates",
]
