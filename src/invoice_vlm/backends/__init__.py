"""The backend interface: images and a prompt in, text out.

A backend is any object with a ``generate(images, prompt)`` method (`Backend`). To make one loadable by name
(``InvoiceExtractor.from_pretrained(backend="mine")``), register a class with a ``from_pretrained`` classmethod
(`BackendFactory`) under the ``invoice_vlm.backends`` entry-point group, as the built-in ``paligemma`` backend does.

Example:
    >>> class EchoBackend:
    ...     def generate(self, images, prompt):
    ...         return ['{"total": 1}' for _ in images]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from invoice_vlm.registry import BACKEND_GROUP, Registry

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["Backend", "BackendFactory", "Generation", "backends", "get_backend", "list_backends"]


@dataclass(frozen=True)
class Generation:
    """A backend's output for one image, with optional per-character confidence.

    Attributes:
        text: the generated text.
        char_confidence: one probability in ``[0, 1]`` per character of ``text`` (e.g. the probability of the token
            that produced it), or ``None`` when the backend has no scores.
    """

    text: str
    char_confidence: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.char_confidence is not None and len(self.char_confidence) != len(self.text):
            raise ValueError(
                f"char_confidence has {len(self.char_confidence)} scores for {len(self.text)} characters."
            )


@runtime_checkable
class Backend(Protocol):
    """What `InvoiceExtractor` needs from a backend: one method.

    ``generate`` receives RGB images and the schema's prompt and returns one text (or `Generation`) per image, in
    order. Optional extras the extractor uses when present: ``name`` (str), ``generation`` (a `GenerationSettings`),
    ``base_model`` (str), ``save_pretrained(directory)``.
    """

    def generate(self, images: Sequence[Image.Image], prompt: str) -> Sequence[str | Generation]:
        """Return one output per image, in order."""
        ...


@runtime_checkable
class BackendFactory(Protocol):
    """What a registered backend is: something with a ``from_pretrained`` that returns a `Backend`."""

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        **options: Any,
    ) -> Backend:
        """Load the backend; ``model`` may be ``None`` when the backend has a default."""
        ...


def _check_backend(name: str, obj: object) -> BackendFactory:
    if not callable(getattr(obj, "from_pretrained", None)):
        raise TypeError(f"backend plugin {name!r} must have a from_pretrained() method, got {obj!r}")
    return obj  # type: ignore[return-value]


backends: Registry[BackendFactory] = Registry("backend", BACKEND_GROUP, _check_backend)
"""The backend registry; built-ins arrive through the ``invoice_vlm.backends`` entry points."""


def get_backend(name: str) -> BackendFactory:
    """The backend factory registered as ``name``; an unknown name's error lists the registered ones."""
    return backends.get(name)


def list_backends() -> list[str]:
    """The registered backend names, sorted."""
    return backends.names()
