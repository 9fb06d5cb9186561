"""The ``paligemma`` backend: the transformers backend restricted to PaliGemma 1 and 2, under its original name.

Directories saved by earlier releases name it in ``invoice_vlm.json`` and keep loading; new code can use
``backend="transformers"``, which loads every family in `invoice_vlm.families` (PaliGemma among them) from the
same directories. The prompt helpers PaliGemma's training and inference share live here too.

Examples:
    >>> # ex = InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448",
    >>> #                                       adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label")
"""

from __future__ import annotations

from typing import Any

from invoice_vlm.backends._hf import has_processor, load_processor, resolve_device_dtype
from invoice_vlm.backends.vlm import TransformersBackend, char_confidence, check_processor
from invoice_vlm.families import PALIGEMMA_IMAGE_TOKEN, get_family

__all__ = [
    "IMAGE_TOKEN",
    "PaliGemmaBackend",
    "build_prompt",
    "char_confidence",
    "has_processor",
    "load_paligemma_processor",
    "resolve_device_dtype",
]

IMAGE_TOKEN = PALIGEMMA_IMAGE_TOKEN


def build_prompt(prompt: str) -> str:
    """The text given to the processor: the image token, then the prompt exactly as trained.

    The processor itself expands the image token, inserts ``<bos>`` after it and ends the prefix with a newline, so
    nothing else is added here; the PaliGemma family's `~invoice_vlm.families.Family.prompt_text` is this function.
    """
    return str(get_family("paligemma").prompt_text(None, prompt))


def load_paligemma_processor(ref: str) -> Any:
    """The processor at ``ref``, which must be PaliGemma's (it defines the prompt's tokens).

    Raises:
        ModelLoadError: it cannot be loaded, or it is another model's processor.
    """
    processor = load_processor(ref)
    check_processor(get_family("paligemma"), processor, ref)
    return processor


class PaliGemmaBackend(TransformersBackend):
    """PaliGemma (transformers) with an optional PEFT adapter: the transformers backend for PaliGemma only.

    Takes the same arguments as `~invoice_vlm.backends.vlm.TransformersBackend`; another family's model is refused
    with advice to use ``backend="transformers"``.
    """

    name = "paligemma"
    families = ("paligemma",)
