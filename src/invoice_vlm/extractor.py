"""`InvoiceExtractor`: documents in, validated `Extraction` results out."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from invoice_vlm.backends import Backend, Generation, get_backend
from invoice_vlm.config import ExtractorConfig, GenerationSettings
from invoice_vlm.errors import BackendError, ConfigError, InvoiceVLMWarning
from invoice_vlm.extraction import Extraction
from invoice_vlm.inputs import Document, iter_images, load_image
from invoice_vlm.parsing import parse_output
from invoice_vlm.schemas import SchemaSpec, get_schema, resolve_schema

__all__ = ["InvoiceExtractor"]

DEFAULT_BACKEND = "paligemma"


def _saved_config(*refs: str | Path | None) -> tuple[ExtractorConfig | None, Path | None]:
    for ref in refs:
        if (
            ref is not None
            and Path(str(ref)).expanduser().is_dir()
            and ExtractorConfig.exists(Path(str(ref)))
        ):
            directory = Path(str(ref)).expanduser()
            return ExtractorConfig.load(directory), directory
    return None, None


class InvoiceExtractor:
    """Extract validated JSON from documents with any backend.

    Args:
        backend: any object with ``generate(images, prompt)`` (see `invoice_vlm.backends.Backend`).
        schema: a registered schema name or a `SchemaSpec`.
        prompt: the prompt to send; defaults to the schema's. Set it only to match how a model was trained.
        backend_name: the registry name saved in ``invoice_vlm.json`` (defaults to the backend's ``name``).

    Example:
        >>> from invoice_vlm import InvoiceExtractor
        >>> from invoice_vlm.testing import FakeBackend
        >>> ex = InvoiceExtractor(backend=FakeBackend('{"total": 3}'), schema="pallet_label")
        >>> from PIL import Image
        >>> ex.extract(Image.new("RGB", (64, 64), "white")).valid
        False
    """

    def __init__(
        self,
        backend: Backend,
        schema: str | SchemaSpec,
        *,
        prompt: str | None = None,
        backend_name: str | None = None,
    ) -> None:
        if not callable(getattr(backend, "generate", None)):
            raise TypeError(
                f"backend must have a generate(images, prompt) method, got {type(backend).__name__}; "
                "see invoice_vlm.backends.Backend."
            )
        self.backend = backend
        self.schema = resolve_schema(schema)
        bind = getattr(backend, "bind_schema", None)
        if callable(bind):
            bind(self.schema)  # backends that parse layouts (ocr) need the schema, not only its prompt
        self.prompt = prompt if prompt is not None else self.schema.prompt
        if "<image>" in self.prompt:
            raise ValueError("The prompt must not contain '<image>'; the backend adds the image tokens.")
        self.backend_name = backend_name or getattr(backend, "name", None) or type(backend).__name__

    def __repr__(self) -> str:
        return f"InvoiceExtractor(backend={self.backend_name!r}, schema={self.schema.name!r}, prompt={self.prompt!r})"

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        schema: str | SchemaSpec | None = None,
        backend: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        prompt: str | None = None,
        **backend_options: Any,
    ) -> InvoiceExtractor:
        """Load a model by id or directory, with an optional adapter, for a schema.

        A directory saved by `save_pretrained` or by fine-tuning holds ``invoice_vlm.json`` and supplies its own
        schema, prompt, backend and generation settings; passing a different schema or prompt is refused, because
        a model answers reliably only the prompt it was trained with.

        Args:
            model: base model id or directory, adapter id or directory, or a directory saved by invoice_vlm.
                Optional for backends with a default model.
            adapter: PEFT adapter id or directory to apply to ``model``.
            schema: registered name or `SchemaSpec`; required unless a saved directory supplies it.
            backend: registered backend name (``"paligemma"`` by default).
            device: ``"cuda"``, ``"cpu"``...; auto when ``None`` (CUDA when present).
            dtype: ``"bfloat16"``, ``"float32"``...; auto when ``None`` (bfloat16 on CUDA, else float32).
            prompt: override the schema's prompt (only to match how a model was trained).
            **backend_options: passed to the backend's ``from_pretrained`` (e.g. ``generation={...}``).

        Example:
            >>> # ex = InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448",
            >>> #     adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label")
            >>> # ex.extract("label.jpg").to_dict()
        """
        saved, saved_dir = _saved_config(adapter, model)
        if saved is not None:
            if schema is not None and resolve_schema(schema).name != saved.schema:
                raise ConfigError(
                    f"{saved_dir} was trained for schema {saved.schema!r}, not {resolve_schema(schema).name!r}; "
                    "drop schema= to use the saved one.",
                    path=saved_dir,
                    key="schema",
                )
            if prompt is not None and prompt != saved.prompt:
                raise ConfigError(
                    f"{saved_dir} was trained with prompt {saved.prompt!r}, not {prompt!r}; a model answers "
                    "reliably only its training prompt. Drop prompt= to use the saved one.",
                    path=saved_dir,
                    key="prompt",
                )
            if backend is not None and backend != saved.backend:
                raise ConfigError(
                    f"{saved_dir} was saved by backend {saved.backend!r}, not {backend!r}.",
                    path=saved_dir,
                    key="backend",
                )
            spec = get_schema(saved.schema)
            if saved.schema_version is not None and saved.schema_version != spec.version:
                warnings.warn(
                    f"{saved_dir} was saved with schema {spec.name!r} version {saved.schema_version}, the installed one "
                    f"is version {spec.version}; outputs may not validate.",
                    InvoiceVLMWarning,
                    stacklevel=2,
                )
            if saved.generation:  # backends without decoding settings (ocr) save none
                backend_options.setdefault("generation", saved.generation_settings())
            schema, prompt, backend = spec, saved.prompt, saved.backend
        if schema is None:
            raise ConfigError(
                "Pass schema= (a registered name such as 'pallet_label', or a SchemaSpec).", key="schema"
            )
        spec = resolve_schema(schema)  # a misspelt schema or backend fails before gigabytes of weights load
        backend_name = backend or DEFAULT_BACKEND
        factory = get_backend(backend_name)
        loaded = factory.from_pretrained(
            model, adapter=adapter, device=device, dtype=dtype, **backend_options
        )
        return cls(loaded, spec, prompt=prompt, backend_name=backend_name)

    @property
    def generation(self) -> GenerationSettings | None:
        """The backend's decoding settings, when it has any."""
        settings = getattr(self.backend, "generation", None)
        return settings if isinstance(settings, GenerationSettings) else None

    def _finish(self, output: object, source: str) -> Extraction:
        if isinstance(output, Generation):
            return parse_output(
                output.text, self.schema, source=source, char_confidence=output.char_confidence
            )
        if isinstance(output, str):
            return parse_output(output, self.schema, source=source)
        return Extraction.failed(
            f"backend {self.backend_name!r} returned {type(output).__name__}, expected str or Generation",
            source=source,
        )

    def _generate(self, images: list[Any]) -> list[object]:
        outputs: list[object] = list(self.backend.generate(images, self.prompt))
        if len(outputs) != len(images):
            raise BackendError(
                f"backend {self.backend_name!r} returned {len(outputs)} outputs for {len(images)} images.",
                self.backend_name,
            )
        return outputs

    def extract(self, document: Document) -> Extraction:
        """Extract one document (a path, bytes, a PIL image or a `PDFPage`).

        Raises:
            DocumentError: the document cannot be opened. (An unparsable model output is not an error: it is an
                `Extraction` with ``valid=False`` and the reason in ``errors``.)
        """
        image, source = load_image(document)
        return self._finish(self._generate([image])[0], source)

    def extract_batch(
        self, documents: Iterable[Document], batch_size: int = 8, progress: bool = True
    ) -> list[Extraction]:
        """Extract many documents in batches: one result per input, in the same order; nothing raises for one item.

        A document that cannot be opened, or a batch whose generation fails, gives failed results that say why
        (a failed batch is retried one document at a time, so one bad item does not sink its neighbours).

        Args:
            documents: paths, bytes, PIL images or `PDFPage` objects.
            batch_size: images per backend call.
            progress: show a progress bar (on stderr).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        docs = list(documents)
        results: list[Extraction | None] = [None] * len(docs)
        pending: list[tuple[int, Any, str]] = []

        from tqdm.auto import tqdm

        with tqdm(total=len(docs), disable=not progress, desc="extract", unit="doc") as bar:

            def flush() -> None:
                for index, output in self._run_batch(pending):
                    results[index] = output
                bar.update(len(pending))
                pending.clear()

            for index, (image, source) in enumerate(iter_images(docs)):
                if isinstance(image, Exception):
                    results[index] = Extraction.failed(str(image), source=source)
                    bar.update(1)
                    continue
                pending.append((index, image, source))
                if len(pending) >= batch_size:
                    flush()
            if pending:
                flush()
        return [r for r in results if r is not None]

    def _run_batch(self, pending: Sequence[tuple[int, Any, str]]) -> list[tuple[int, Extraction]]:
        try:
            outputs = self._generate([image for _, image, _ in pending])
            return [(i, self._finish(o, src)) for (i, _, src), o in zip(pending, outputs, strict=True)]
        except Exception as batch_exc:
            if len(pending) == 1:
                i, _, src = pending[0]
                return [
                    (
                        i,
                        Extraction.failed(
                            f"generation failed: {type(batch_exc).__name__}: {batch_exc}", source=src
                        ),
                    )
                ]
        done = []
        for item in pending:
            done.extend(self._run_batch([item]))
        return done

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``invoice_vlm.json`` (schema, prompt, backend, generation settings) and the backend's weights.

        Loading the directory with `from_pretrained` reproduces this extractor's prompt and schema exactly.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        saver = getattr(self.backend, "save_pretrained", None)
        if callable(saver):
            saver(directory)
        settings = self.generation
        config = ExtractorConfig(
            schema=self.schema.name,
            prompt=self.prompt,
            backend=self.backend_name,
            generation=vars(settings).copy() if settings is not None else {},
            schema_version=self.schema.version,
            base_model=getattr(self.backend, "base_model", None),
        )
        config.save(directory)
        return directory
