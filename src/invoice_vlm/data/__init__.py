"""Datasets in, datasets out: loaders for the formats users already have, and a synthetic document generator.

Examples:
    >>> # from invoice_vlm.data import load
    >>> # ds = load("my-roboflow-export", schema="pallet_label")   # DatasetDict: train / valid / test
    >>> # ds["train"][0]["image"], ds["train"][0]["prefix"], ds["train"][0]["target"]
"""

from __future__ import annotations

from invoice_vlm.data.loading import FORMATS, Record, load, prediction_text, read_records, reference_text

__all__ = ["FORMATS", "Record", "load", "prediction_text", "read_records", "reference_text"]
