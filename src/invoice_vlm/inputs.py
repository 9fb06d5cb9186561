"""Open documents as RGB images: paths, bytes, PIL images and PDF pages.

Every image is EXIF-rotated (phone photos are often stored sideways with a rotation tag), converted to RGB and
checked for a sane size before any model sees it. A PDF page that carries a text layer (a born-digital invoice)
keeps it beside its image, in ``image.info[TEXT_LAYER]``: the exact characters and where they sit, which the offline
reader uses instead of OCR.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from invoice_vlm.errors import DocumentError, MissingDependencyError

__all__ = [
    "MAX_PIXELS",
    "MIN_SIDE",
    "PDF_DPI",
    "TEXT_LAYER",
    "Document",
    "PDFPage",
    "TextRun",
    "describe_source",
    "load_image",
    "load_pages",
    "pdf_pages",
]

TEXT_LAYER = "invoice_vlm.text_layer"
"""Key in ``image.info`` of a rendered PDF page's text layer: a tuple of `TextRun` in the image's pixels."""

MAX_PIXELS = 64_000_000
"""Larger images are refused: a 64-megapixel page is far beyond what any document VLM reads (448 x 448)."""
MIN_SIDE = 8
"""Smaller images are refused: nothing legible fits in fewer pixels."""
PDF_DPI = 150
"""Resolution PDF pages are rendered at unless a `PDFPage` says otherwise."""


@dataclass(frozen=True)
class PDFPage:
    """One page of a PDF file, rendered at ``dpi`` when opened."""

    path: Path
    page: int = 0
    dpi: int = PDF_DPI

    def __str__(self) -> str:
        return f"{self.path.name}#page={self.page + 1}"


@dataclass(frozen=True)
class TextRun:
    """A run of text on one line of a PDF page's text layer, with its box in the rendered image's pixels."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float


Document = Union[str, "os.PathLike[str]", bytes, Image.Image, PDFPage]
"""Anything `load_image` opens."""


def describe_source(doc: object) -> str:
    """How a document is named in results and errors: its path, or a description (``<1234 bytes>``)."""
    if isinstance(doc, (str, os.PathLike)):
        return os.fspath(doc)
    if isinstance(doc, PDFPage):
        return str(doc)
    if isinstance(doc, bytes):
        return f"<{len(doc)} bytes>"
    if isinstance(doc, Image.Image):
        name = getattr(doc, "filename", "") or ""
        return name or f"<PIL image {doc.width}x{doc.height}>"
    return repr(doc)


def _render_pdf(path: Path, dpi: int, pages: Sequence[int] | None = None) -> tuple[list[Image.Image], int]:
    """Render ``pages`` of a PDF (every page when ``None``) in one opening; returns them and the page count.

    Each rendered page keeps its text layer in ``image.info[TEXT_LAYER]``.
    """
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise MissingDependencyError("Reading PDF files", "pdf", "pypdfium2") from None
    try:
        pdf = pdfium.PdfDocument(str(path))
    except RuntimeError as exc:  # pypdfium2's PdfiumError: not a PDF, encrypted, damaged
        raise DocumentError(f"Cannot read {str(path)!r} as a PDF: {exc}", str(path)) from None
    try:
        count = len(pdf)
        images = []
        for page in range(count) if pages is None else pages:
            if not 0 <= page < count:
                raise DocumentError(f"{path} has {count} page(s); page {page + 1} does not exist.", str(path))
            pdf_page = pdf[page]
            image: Image.Image = pdf_page.render(scale=dpi / 72).to_pil()
            textpage = pdf_page.get_textpage()
            try:
                runs = _text_runs(textpage, pdf_page.get_height(), dpi / 72)
            finally:
                textpage.close()
            if runs:
                image.info[TEXT_LAYER] = runs
            images.append(image)
        return images, count
    finally:
        pdf.close()


def _text_runs(textpage: object, page_height: float, scale: float) -> tuple[TextRun, ...]:
    """Group a PDF text page's characters into runs: one line, no gap wider than about a character's height."""
    runs: list[TextRun] = []
    text_of_run: list[str] = []
    inked: list[
        tuple[float, float, float, float]
    ] = []  # left, bottom, right, top of the run's visible characters

    def close() -> None:
        text = "".join(text_of_run).strip()
        if text and inked:
            runs.append(
                TextRun(
                    text,
                    min(c[0] for c in inked) * scale,
                    (page_height - max(c[3] for c in inked)) * scale,
                    max(c[2] for c in inked) * scale,
                    (page_height - min(c[1] for c in inked)) * scale,
                )
            )
        text_of_run.clear()
        inked.clear()

    count = textpage.count_chars()  # type: ignore[attr-defined]
    text = textpage.get_text_range(0, count) if count else ""  # type: ignore[attr-defined]
    bottom_of_run = top_of_run = 0.0
    for i in range(min(count, len(text))):
        ch = text[i]
        if ch in "\r\n\x00\ufffe":
            close()
            continue
        if ch.isspace():
            if inked:
                text_of_run.append(ch)
            continue
        left, bottom, right, top = textpage.get_charbox(i)  # type: ignore[attr-defined]
        if inked:
            last_left, _, last_right, _ = inked[-1]
            height = max(top_of_run - bottom_of_run, 1.0)
            same_line = (
                bottom < top_of_run and top > bottom_of_run
            )  # overlapping extents: "1.234,50" is one run
            if not same_line or left - last_right > 1.2 * height or left < last_left - 0.5 * height:
                close()
        if not inked:
            bottom_of_run, top_of_run = bottom, top
        bottom_of_run, top_of_run = min(bottom_of_run, bottom), max(top_of_run, top)
        text_of_run.append(ch)
        inked.append((left, bottom, right, top))
    close()
    return tuple(runs)


def pdf_pages(path: str | os.PathLike[str], dpi: int = PDF_DPI) -> list[PDFPage]:
    """Every page of a PDF, ready for `InvoiceExtractor.extract_batch`.

    Example:
        >>> # ex.extract_batch(pdf_pages("scan.pdf"))  # one Extraction per page
    """
    p = Path(path)
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise MissingDependencyError("Reading PDF files", "pdf", "pypdfium2") from None
    pdf = pdfium.PdfDocument(str(p))
    try:
        return [PDFPage(p, i, dpi) for i in range(len(pdf))]
    finally:
        pdf.close()


def load_pages(doc: Document) -> list[tuple[Image.Image, str]]:
    """Open every page of ``doc``: each page of a PDF file (rendered in one opening), else the one image.

    Pages are named like ``invoice.pdf#page=2`` when there are several.

    Raises:
        DocumentError: the document is missing, unreadable, not an image, or of an unusable size.
    """
    if isinstance(doc, (str, os.PathLike)) and Path(doc).suffix.lower() == ".pdf" and Path(doc).is_file():
        path = Path(doc)
        images, count = _render_pdf(path, PDF_DPI)
        sources = [os.fspath(doc)] if count == 1 else [str(PDFPage(path, i, PDF_DPI)) for i in range(count)]
        return [(_prepared(image, source), source) for image, source in zip(images, sources, strict=True)]
    return [load_image(doc)]


def load_image(doc: Document) -> tuple[Image.Image, str]:
    """Open ``doc`` as an RGB image and name its source.

    A PDF path opens its only page; a PDF with several pages must be split with `pdf_pages` first, so no page is
    silently dropped.

    Raises:
        DocumentError: the document is missing, unreadable, not an image, or of an unusable size.
    """
    source = describe_source(doc)
    try:
        if isinstance(doc, PDFPage):
            image = _render_pdf(doc.path, doc.dpi, [doc.page])[0][0]
        elif isinstance(doc, (str, os.PathLike)):
            path = Path(doc)
            if not path.is_file():
                raise DocumentError(f"Document {source!r} does not exist or is not a file.", source)
            if path.suffix.lower() == ".pdf":
                images, count = _render_pdf(path, PDF_DPI, [0])
                if count != 1:
                    raise DocumentError(
                        f"{source!r} has {count} pages; pass invoice_vlm.inputs.pdf_pages({source!r}) to "
                        f"extract_batch to get one result per page, or use invoice_vlm.load_pages({source!r}).",
                        source,
                    )
                image = images[0]
            else:
                image = Image.open(path)
                image.load()
        elif isinstance(doc, (bytes, bytearray)):
            if bytes(doc[:5]) == b"%PDF-":
                raise DocumentError(
                    "PDF bytes are not supported; save them to a file and pass pdf_pages(path)."
                )
            image = Image.open(io.BytesIO(doc))
            image.load()
        elif isinstance(doc, Image.Image):
            image = doc
        else:
            raise DocumentError(
                f"Cannot open a document of type {type(doc).__name__}; pass a path, bytes, a PIL image or a PDFPage.",
                source,
            )
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise DocumentError(f"Cannot read {source!r} as an image: {exc}", source) from None
    return _prepared(image, source), source


def _prepared(image: Image.Image, source: str) -> Image.Image:
    """Size-checked, EXIF-rotated, RGB (transparency on white), its PDF text layer kept."""
    if image.width * image.height > MAX_PIXELS:
        raise DocumentError(
            f"{source!r} is {image.width}x{image.height} pixels, more than {MAX_PIXELS:,}; downscale it first.",
            source,
        )
    if min(image.width, image.height) < MIN_SIDE:
        raise DocumentError(
            f"{source!r} is only {image.width}x{image.height} pixels; nothing legible fits.", source
        )
    text_layer = image.info.get(TEXT_LAYER)
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas become paper white, not black
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if text_layer:
        image.info[TEXT_LAYER] = text_layer
    return image
