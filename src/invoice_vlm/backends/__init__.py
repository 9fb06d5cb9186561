"""The backend interface: images and a typed request in, one `Generation` per image out.

A backend is any object with ``generate(images, request) -> list[Generation]`` (`Backend`). The request
(`GenerationRequest`) carries everything the backend needs to know for this call: the prompt, the `SchemaSpec` and
its bounded JSON schema, the decoding settings and whether to constrain decoding to the schema, so one backend can
serve several extractors with different schemas at once. A `Generation` holds text (parsed by the extractor), or
already-structured ``data`` (used as is), with per-character or per-field confidence.

What else a backend may offer is the optional, documented `BackendInfo` protocol, read once by `describe_backend`
when an extractor is built: ``name``, ``base_model``, ``adapter``, ``generation`` (default decoding settings: the
backend decodes), ``constrained_decoding`` (it can constrain decoding now) and ``save_pretrained(directory)``.

To make a backend loadable by name (``InvoiceExtractor.from_pretrained(backend="mine")``), register a class with a
``from_pretrained`` classmethod (`BackendFactory`) under the ``invoice_vlm.backends`` entry-point group, as the
built-in ``paligemma``, ``vllm`` and ``ocr`` backends do. A class may declare ``model_format`` (a string, default
its registry name): backends that declare the same format load each other's saved directories, as ``paligemma`` and
``vllm`` do (``from_pretrained(saved_dir, backend="vllm")``).

Examples:
    >>> class EchoBackend:
    ...     def generate(self, images, request):
    ...         return [Generation(data={"total": 1}) for _ in images]
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from invoice_vlm.config import GenerationSettings
from invoice_vlm.errors import BackendContractError, BackendError
from invoice_vlm.registry import BACKEND_GROUP, Registry

if TYPE_CHECKING:
    from PIL import Image

    from invoice_vlm.evidence import Word
    from invoice_vlm.schemas import SchemaSpec

__all__ = [
    "Backend",
    "BackendFactory",
    "BackendInfo",
    "Generation",
    "GenerationRequest",
    "backends",
    "describe_backend",
    "get_backend",
    "list_backends",
]


@dataclass(frozen=True)
class GenerationRequest:
    """What one ``generate`` call asks of a backend.

    Attributes:
        prompt: the text prompt after the image, exactly as the model was trained with it.
        schema: the schema the output must fit (a layout reader reads its fields; a decoder may constrain to it).
        settings: decoding settings (``max_new_tokens``, ``num_beams``...).
        constrained: constrain decoding to ``json_schema`` (only sent to backends whose ``constrained_decoding``
            is true).
        json_schema: the schema's bounded JSON schema for constrained decoding (`invoice_vlm.constraints`); built
            from ``schema`` when the request is constrained, else empty.
    """

    prompt: str
    schema: SchemaSpec
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    constrained: bool = False
    json_schema: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.constrained and not self.json_schema:
            from invoice_vlm.constraints import generation_schema

            object.__setattr__(self, "json_schema", generation_schema(self.schema))


@dataclass(frozen=True)
class Generation:
    """A backend's output for one image: text to parse, or structured data, with optional confidence.

    Attributes:
        text: the generated text (what a model wrote); ``None`` when the backend produced ``data`` directly.
        char_confidence: one probability in ``[0, 1]`` per character of ``text`` (e.g. the probability of the token
            that produced it), or ``None``.
        data: the document as a JSON object, when the backend produced structure itself (the extractor then parses
            nothing; ``raw_text`` becomes its JSON).
        field_confidence: per leaf path (``"products[0].cases"``), a probability in ``[0, 1]``, or ``None``.
        num_tokens: how many tokens a decoder generated for it (end-of-sequence excluded), when it counts them.
        printed: leaf path -> text the backend saw for a field but did not take (not of the field's kind), kept in
            `Extraction.printed` so a reviewer sees it.
        words: the page's words with their boxes (`invoice_vlm.evidence.Word`, 0-1 coordinates of the image the
            backend was given), when the backend read them (the OCR backend does); the extractor locates each value
            among them (`Extraction.evidence`) instead of reading the page again.
    """

    text: str | None = None
    char_confidence: tuple[float, ...] | None = None
    data: dict[str, Any] | None = None
    field_confidence: Mapping[str, float] | None = None
    num_tokens: int | None = None
    printed: Mapping[str, str] | None = None
    words: Sequence[Word] | None = None

    def __post_init__(self) -> None:
        if self.text is None and self.data is None:
            raise ValueError("A Generation needs text or data.")
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(f"Generation.text must be a str, got {type(self.text).__name__}.")
        if self.data is not None and not isinstance(self.data, dict):
            raise TypeError(
                f"Generation.data must be a dict (a JSON object), got {type(self.data).__name__}."
            )
        if self.char_confidence is not None:
            if self.text is None:
                raise ValueError("char_confidence needs text: it holds one score per character of it.")
            if len(self.char_confidence) != len(self.text):
                raise ValueError(
                    f"char_confidence has {len(self.char_confidence)} scores for {len(self.text)} characters."
                )


@runtime_checkable
class Backend(Protocol):
    """What `InvoiceExtractor` needs from a backend: one method.

    ``generate`` receives RGB images and a `GenerationRequest` and returns one `Generation` per image, in order.
    Optional capabilities are described by `BackendInfo`.
    """

    def generate(self, images: Sequence[Image.Image], request: GenerationRequest) -> Sequence[Generation]:
        """Return one `Generation` per image, in order."""
        ...


@dataclass(frozen=True)
class BackendInfo:
    """A backend's optional capabilities, read once when an extractor is built (`describe_backend`).

    A backend offers them as attributes of the same names; each is optional.

    Attributes:
        name: the registry name saved in ``invoice_vlm.json`` (default: the class name).
        base_model: id or path of the base weights, when there are any.
        adapter: id or path of the adapter applied, when there is one.
        generation: the backend's default decoding settings; a backend without them does not decode (the OCR
            reader), and its extractor saves no generation settings.
        constrained_decoding: whether the backend can constrain decoding to ``request.json_schema`` now.
        saves: whether it has ``save_pretrained(directory)`` (weights written beside ``invoice_vlm.json``).
    """

    name: str
    base_model: str | None = None
    adapter: str | None = None
    generation: GenerationSettings | None = None
    constrained_decoding: bool = False
    saves: bool = False


_OLD_CONTRACT = (
    "{name} is written to the old backend contract {what}. A backend now implements "
    "generate(images, request) -> list[Generation]: read the prompt from request.prompt and the schema from "
    "request.schema (bind_schema is gone), and return invoice_vlm.Generation(text=...) or Generation(data=...) "
    "per image. See invoice_vlm.backends."
)


def _optional(backend: object, attribute: str, kinds: type | tuple[type, ...], name: str) -> Any:
    value = getattr(backend, attribute, None)
    if value is not None and not isinstance(value, kinds):
        raise BackendContractError(
            f"backend {name!r}: {attribute} must be {getattr(kinds, '__name__', kinds)}, got {type(value).__name__}."
        )
    return value


def describe_backend(backend: object, name: str | None = None) -> BackendInfo:
    """Check ``backend`` against the contract once, and read its optional capabilities.

    Raises:
        BackendContractError: (a TypeError) ``backend`` has no ``generate``, a capability has the wrong type, or it follows the old contract
            (``generate(images, prompt)``, ``bind_schema``); the message says what to change.
    """
    label = name or getattr(backend, "name", None) or type(backend).__name__
    generate = getattr(backend, "generate", None)
    if not callable(generate):
        raise BackendContractError(
            f"backend must have a generate(images, request) method, got {type(backend).__name__}; "
            "see invoice_vlm.backends.Backend."
        )
    if callable(getattr(backend, "bind_schema", None)):
        raise BackendContractError(
            _OLD_CONTRACT.format(name=f"Backend {label!r}", what="(it has bind_schema())")
        )
    try:
        parameters = list(inspect.signature(generate).parameters)
    except (TypeError, ValueError):
        parameters = []
    if len(parameters) >= 2 and parameters[1] == "prompt":
        raise BackendContractError(
            _OLD_CONTRACT.format(name=f"Backend {label!r}", what="generate(images, prompt)")
        )
    saver = getattr(backend, "save_pretrained", None)
    return BackendInfo(
        name=str(name or _optional(backend, "name", str, label) or type(backend).__name__),
        base_model=_optional(backend, "base_model", str, label),
        adapter=_optional(backend, "adapter", str, label),
        generation=_optional(backend, "generation", GenerationSettings, label),
        constrained_decoding=bool(_optional(backend, "constrained_decoding", bool, label)),
        saves=callable(saver),
    )


def check_outputs(outputs: object, count: int, name: str) -> list[Generation]:
    """A backend's answer to one call as a list of `Generation`, or `BackendError` saying what is wrong."""
    found = list(outputs) if isinstance(outputs, Sequence) and not isinstance(outputs, str) else None
    if found is None:
        raise BackendError(
            f"backend {name!r} returned {type(outputs).__name__}, expected a list of Generation.", name
        )
    if len(found) != count:
        raise BackendError(f"backend {name!r} returned {len(found)} outputs for {count} images.", name)
    for item in found:
        if isinstance(item, str):
            raise BackendError(
                _OLD_CONTRACT.format(name=f"Backend {name!r}", what="(it returned text, not Generation)"),
                name,
            )
        if not isinstance(item, Generation):
            raise BackendError(
                f"backend {name!r} returned {type(item).__name__}, expected invoice_vlm.Generation.", name
            )
    return found


@runtime_checkable
class BackendFactory(Protocol):
    """What a registered backend is: something with a ``from_pretrained`` that returns a `Backend`.

    It may also have a ``model_format`` attribute: the name of the directory layout it reads and writes (default:
    its registry name); backends with the same format load each other's saved directories.
    """

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
