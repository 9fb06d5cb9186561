"""Synthetic labelled documents: realistic values, several layouts, clean scans, phone photos or rotated scans.

Each schema brings its own `SynthKit` (a sampler and its templates), registered under the schema's name through
the ``invoice_vlm.synth`` entry points — the built-in ``pallet_label`` and ``invoice`` exactly as a plugin schema
would (`register_synth`). The drawing helpers a template needs live in `invoice_vlm.data.synth.page`, the photo
effects in `invoice_vlm.data.synth.photo`. Output is the Roboflow/maestro JSONL layout
(``<split>/annotations.jsonl`` beside the images) that `invoice_vlm.data.load`, fine-tuning and other tools read.

Examples:
    >>> # from invoice_vlm.data.synth import write_dataset
    >>> # write_dataset("pallet_label", n=200, out="data/pallets", seed=0, style="mixed")
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from invoice_vlm.data.synth.kit import Sampler, SynthKit, Template
from invoice_vlm.data.synth.page import A4, font_path, load_font, raster
from invoice_vlm.data.synth.photo import photo_style
from invoice_vlm.data.synth.values import make_faker
from invoice_vlm.errors import InputError, MissingDependencyError, require
from invoice_vlm.registry import Registry
from invoice_vlm.schemas import SchemaSpec, resolve_schema

__all__ = [
    "SAMPLERS",
    "STYLES",
    "SYNTH_GROUP",
    "TEMPLATES",
    "Document",
    "SynthKit",
    "font_path",
    "generate",
    "load_font",
    "photo_style",
    "register_synth",
    "render",
    "sample",
    "synth_kits",
    "write_dataset",
    "write_pdf",
]

SYNTH_GROUP = "invoice_vlm.synth"
Style = Literal["clean", "photo", "rotated", "mixed"]
STYLES: tuple[str, ...] = ("clean", "photo", "rotated", "mixed")


def _check_kit(name: str, obj: object) -> SynthKit:
    if callable(obj) and not isinstance(obj, SynthKit):
        obj = obj()
    if not isinstance(obj, SynthKit):
        raise TypeError(
            f"synth plugin {name!r} must be a SynthKit (or a function returning one), got {obj!r}"
        )
    return obj


synth_kits: Registry[SynthKit] = Registry("synthetic data kit", SYNTH_GROUP, _check_kit)
"""Schema name -> its `SynthKit`; built-ins arrive through the ``invoice_vlm.synth`` entry points."""


def register_synth(schema: str, kit: SynthKit, *, replace: bool = False) -> SynthKit:
    """Make ``kit`` generate documents for the schema registered as ``schema``.

    Examples:
        >>> # register_synth("parcel_tag", SynthKit(sample_parcel, {"plain": draw_parcel}))
        >>> # generate("parcel_tag", seed=1).image
    """
    return synth_kits.register(schema, kit, replace=replace)


class _KitView(Mapping[str, Any]):
    """A read-only view of the registry: schema name -> one attribute of its kit (templates, sampler)."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def __getitem__(self, name: str) -> Any:
        if name not in synth_kits:
            raise KeyError(name)
        return getattr(synth_kits.get(name), self._attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(synth_kits.names())

    def __len__(self) -> int:
        return len(synth_kits.names())


TEMPLATES: Mapping[str, Mapping[str, Template]] = _KitView("templates")
"""Schema name -> template name -> drawing function, for every registered kit."""
SAMPLERS: Mapping[str, Sampler] = _KitView("sampler")
"""Schema name -> its sampler, for every registered kit."""


@dataclass(frozen=True)
class Document:
    """One generated document: its data (valid for the schema), the image, and how it was made."""

    data: dict[str, Any]
    image: Image.Image
    template: str
    style: str


def _kit(spec: SchemaSpec) -> SynthKit:
    if spec.name not in synth_kits:
        raise InputError(
            f"No synthetic data for schema {spec.name!r}; available: {', '.join(synth_kits.names())}. "
            "A schema brings its own with invoice_vlm.data.synth.register_synth."
        )
    return synth_kits.get(spec.name)


def sample(schema: str | SchemaSpec, seed: int) -> dict[str, Any]:
    """One document's data for ``schema``, validated against it; the same seed gives the same data."""
    spec = resolve_schema(schema)
    data = _kit(spec).sampler(make_faker(seed), random.Random(seed))
    spec.validate_data(data)
    return data


def write_pdf(
    out: str | Path, seed: int, *, text_layer: bool = True, schema: str | SchemaSpec = "invoice"
) -> dict[str, Any]:
    """Write a two-page invoice PDF and return its data: born-digital (with a text layer) or scanned (images only).

    Page 1 holds the header fields and the first line items, page 2 the rest and the totals, so reading it takes
    both pages (one result, merged). Born-digital pages are drawn with fpdf2 in DejaVu Sans; scanned ones are the
    same pages rendered at 150 dpi and saved as images in a PDF.

    Examples:
        >>> # data = write_pdf("invoice.pdf", seed=3)                     # read from its text layer
        >>> # data = write_pdf("scan.pdf", seed=3, text_layer=False)      # read by OCR
    """
    spec = resolve_schema(schema)
    layout = _kit(spec).pages
    if layout is None:
        raise InputError(f"Schema {spec.name!r} has no multi-page layout; its SynthKit sets none (pages=).")
    pages, truth = layout(spec, sample(spec, seed), random.Random(f"{seed}:pdf"))
    spec.validate_data(truth)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if text_layer:
        try:
            from fpdf import FPDF
        except ImportError:
            raise MissingDependencyError("Writing born-digital PDFs", "data", "fpdf2") from None
        pdf = FPDF(unit="pt", format=A4)
        pdf.set_auto_page_break(False)
        pdf.add_font("DejaVu", "", str(font_path("sans")))
        pdf.add_font("DejaVu", "B", str(font_path("sans", bold=True)))
        for commands in pages:
            pdf.add_page()
            for x, y, text, size, bold, align in commands:
                pdf.set_font("DejaVu", "B" if bold else "", size)
                width = pdf.get_string_width(text) if align == "right" else 0.0
                pdf.text(x - width, y + size * 0.8, text)  # fpdf2 places text by its baseline
        pdf.output(str(out))
    else:
        images = [raster(commands, 150 / 72) for commands in pages]
        images[0].save(out, "PDF", resolution=150.0, save_all=True, append_images=images[1:])
    return truth


def render(
    schema: str | SchemaSpec,
    data: dict[str, Any],
    *,
    template: str | None = None,
    style: str = "clean",
    seed: int = 0,
) -> Document:
    """Draw ``data`` on a page with ``template`` (random when ``None``) in ``style`` (``clean`` or ``photo``)."""
    spec = resolve_schema(schema)
    templates = _kit(spec).templates
    rng = random.Random(seed)
    name = template or rng.choice(sorted(templates))
    if name not in templates:
        raise InputError(
            f"Unknown template {name!r} for {spec.name}; available: {', '.join(sorted(templates))}."
        )
    if style not in ("clean", "photo", "rotated"):
        raise InputError(f"style must be 'clean', 'photo' or 'rotated' for one document, got {style!r}.")
    drawn = templates[name](spec, data, rng)
    image, data = drawn if isinstance(drawn, tuple) else (drawn, data)
    spec.validate_data(data)
    if style == "photo":
        image = photo_style(image, rng)
    elif style == "rotated":  # a scan fed sideways or upside down
        image = image.rotate(rng.choice((90, 180, 270)), expand=True, fillcolor="white")
    return Document(data=data, image=image, template=name, style=style)


def generate(
    schema: str | SchemaSpec, seed: int, *, style: str = "clean", template: str | None = None
) -> Document:
    """One labelled document; the same ``seed`` gives the same data and the same image.

    ``style="mixed"`` picks clean or photo per document.
    """
    rng = random.Random(f"{seed}:doc")
    chosen = style if style != "mixed" else rng.choice(("clean", "photo"))
    return render(schema, sample(schema, seed), template=template, style=chosen, seed=seed)


def _split_counts(n: int, split: Sequence[float]) -> list[int]:
    if len(split) != 3 or any(s < 0 for s in split) or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
        raise InputError(
            f"split must be three non-negative fractions summing to 1, e.g. 0.8,0.1,0.1; got {split}."
        )
    train = round(n * split[0])
    valid = round(n * split[1])
    return [train, valid, n - train - valid]


def write_dataset(
    schema: str | SchemaSpec,
    n: int,
    out: str | Path,
    *,
    seed: int = 0,
    style: Style = "clean",
    split: Sequence[float] = (0.8, 0.1, 0.1),
    template: str | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write ``n`` documents as ``out/{train,valid,test}/annotations.jsonl`` plus images.

    Rows are ``{"image": file, "prefix": prompt, "suffix": json}``; annotations are byte-identical for the same seed.
    ``out`` must be empty or new, so two runs never mix; ``overwrite=True`` first deletes its ``train``, ``valid``
    and ``test`` folders (nothing else in it).

    Returns:
        The number of documents per split.

    Raises:
        InputError: ``out`` is a file, or a folder that is not empty and ``overwrite`` is false.
        MissingDependencyError: the ``data`` extra is missing (checked before anything is written).
    """
    spec = resolve_schema(schema)
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}.")
    if style not in STYLES:
        raise InputError(f"style must be one of {', '.join(STYLES)}, got {style!r}.")
    require("The synthetic data generator", "data", "faker", "numpy")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder to write the dataset into.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(
                f"{out} is not empty; writing into it would mix two datasets. Pick a new folder, or pass "
                "overwrite=True (--overwrite) to replace its train/valid/test folders."
            )
        import shutil

        for name in ("train", "valid", "test"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    counts = _split_counts(n, split)
    from tqdm.auto import tqdm

    index = 0
    written: dict[str, int] = {}
    with tqdm(total=n, disable=not progress, desc=f"synth {spec.name}", unit="doc") as bar:
        for name, count in zip(("train", "valid", "test"), counts, strict=True):
            if count == 0:
                continue
            folder = out / name
            folder.mkdir(parents=True, exist_ok=True)
            lines = []
            for _ in range(count):
                doc = generate(spec, seed * 1_000_003 + index, style=style, template=template)
                suffix = ".jpg" if doc.style == "photo" else ".png"
                file_name = f"{spec.name}_{index:05d}{suffix}"
                if suffix == ".jpg":
                    doc.image.save(folder / file_name, quality=90)
                else:
                    doc.image.save(folder / file_name, optimize=False)
                lines.append(
                    json.dumps(
                        {"image": file_name, "prefix": spec.prompt, "suffix": spec.dumps(doc.data)},
                        ensure_ascii=False,
                    )
                )
                index += 1
                bar.update(1)
            (folder / "annotations.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            written[name] = count
    return written
