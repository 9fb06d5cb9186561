"""Metrics: BLEU and TER as the reference model card reports them, and field-level scores that catch what BLEU hides.

- `bleu`, `ter`: the keys and values of the Hugging Face ``evaluate`` library's ``bleu`` and ``ter`` metrics (the shape
  of the reference card's numbers), computed with sacrebleu.
- `field_accuracy`: share of the reference's leaf fields that came back right, per field and per document, with list
  items (products, line items) matched by best assignment.
- `ted_accuracy`, `field_f1`: Donut's normalized-tree-edit-distance accuracy and micro field F1 (``JSONParseEvaluator``),
  comparable with published Donut-style results.
- `validity_rates`, `character_error_rate`.

Everything but BLEU/TER is pure Python; sacrebleu is imported only when those two run.
"""

from __future__ import annotations

from invoice_vlm.metrics.donut import field_f1, ted_accuracy
from invoice_vlm.metrics.fields import character_error_rate, field_accuracy, normalize_value, validity_rates
from invoice_vlm.metrics.text import bleu, ter

__all__ = [
    "bleu",
    "character_error_rate",
    "field_accuracy",
    "field_f1",
    "normalize_value",
    "ted_accuracy",
    "ter",
    "validity_rates",
]
