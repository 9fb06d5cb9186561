"""What a schema brings to the generator: a sampler of realistic values and the templates that print them."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from invoice_vlm.data.synth.page import Command
from invoice_vlm.schemas import SchemaSpec

__all__ = ["PageBuilder", "Sampler", "SynthKit", "Template"]

Sampler = Callable[[Any, random.Random], dict[str, Any]]
"""``(faker, rng) -> data``: one document's values, valid for the schema."""
Template = Callable[
    [SchemaSpec, dict[str, Any], random.Random], "Image.Image | tuple[Image.Image, dict[str, Any]]"
]
"""Draws a document; returns its page, or its page and the data as printed when it prints less than the sample."""
PageBuilder = Callable[
    [SchemaSpec, dict[str, Any], random.Random], tuple[list[list[Command]], dict[str, Any]]
]
"""Lays out a multi-page document as text commands per page, with the data as printed (for `write_pdf`)."""


@dataclass(frozen=True)
class SynthKit:
    """A schema's synthetic data: its sampler, its templates by name, and optionally a multi-page layout.

    Register one under the schema's name with `invoice_vlm.data.synth.register_synth`, or through the
    ``invoice_vlm.synth`` entry-point group, as the built-in schemas do.
    """

    sampler: Sampler
    templates: Mapping[str, Template]
    pages: PageBuilder | None = None
    description: str = field(default="")

    def __post_init__(self) -> None:
        if not callable(self.sampler):
            raise TypeError(f"SynthKit.sampler must be callable, got {self.sampler!r}")
        if not self.templates or not all(callable(t) for t in self.templates.values()):
            raise TypeError("SynthKit.templates must map at least one name to a drawing function")
