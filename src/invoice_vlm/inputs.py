"""Open documents as RGB images: paths, bytes, PIL images and PDF pages.

Every image is EXIF-rotated (phone photos are often stored sideways with a rotation tag), converted to RGB and
checked for a sane size before any model sees it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from PIL import Image, ImageOps, UnidentifiedImageError

from invoice_vlm.errors import DocumentError, MissingDependencyError

__all__ = ["MAX_PIXELS", "MIN_SIDE", "Document", "PDFPage", "load_image", "pdf_pages"]

MAX_PIXELS = 64_000_000
"""Larger images are refused: a 64-megapixel page is far beyond what any document VLM reads (448 x 448)."""
MIN_SIDE = 8
"""Smaller images are refused: nothing legible fits in fewer pixels."""


@dataclass(frozen=True)
class PDFPage:
    """One page of a PDF file, rendered at ``dpi`` when opened."""

    path: Path
    page: int = 0
    dpi: int = 150

    def __str__(self) -> str:
        return f"{self.path.name}#page={self.page + 1}"


Document = Union[str, "os.PathLike[str]", bytes, Image.Image, PDFPage]
"""Anything `load_image` opens."""


def _source(doc: object) -> str:
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


def _render_pdf(path: Path, page: int, dpi: int) -> Image.Image:
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise MissingDependencyError("Reading PDF files", "pdf", "pypdfium2") from None
    pdf = pdfium.PdfDocument(str(path))
    try:
        if not 0 <= page < len(pdf):
            raise DocumentError(f"{path} has {len(pdf)} page(s); page {page + 1} does not exist.", str(path))
        image: Image.Image = pdf[page].render(scale=dpi / 72).to_pil()
        return image
    finally:
        pdf.close()


def pdf_pages(path: str | os.PathLike[str], dpi: int = 150) -> list[PDFPage]:
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


def load_image(doc: Document) -> tuple[Image.Image, str]:
    """Open ``doc`` as an RGB image and name its source.

    A PDF path opens its only page; a PDF with several pages must be split with `pdf_pages` first, so no page is
    silently dropped.

    Raises:
        DocumentError: the document is missing, unreadable, not an image, or of an unusable size.
    """
    source = _source(doc)
    try:
        if isinstance(doc, PDFPage):
            image = _render_pdf(doc.path, doc.page, doc.dpi)
        elif isinstance(doc, (str, os.PathLike)):
            path = Path(doc)
            if not path.is_file():
                raise DocumentError(f"Document {source!r} does not exist or is not a file.", source)
            if path.suffix.lower() == ".pdf":
                pages = pdf_pages(path)
                if len(pages) != 1:
                    raise DocumentError(
                        f"{source!r} has {len(pages)} pages; pass invoice_vlm.inputs.pdf_pages({source!r}) to "
                        "extract_batch to get one result per page.",
                        source,
                    )
                image = _render_pdf(path, 0, pages[0].dpi)
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
    if image.width * image.height > MAX_PIXELS:
        raise DocumentError(
            f"{source!r} is {image.width}x{image.height} pixels, more than {MAX_PIXELS:,}; downscale it first.",
            source,
        )
    if min(image.width, image.height) < MIN_SIDE:
        raise DocumentError(
            f"{source!r} is only {image.width}x{image.height} pixels; nothing legible fits.", source
        )
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas become paper white, not black
    elif image.mode != "RGB":
        image = image.convert("RGB")
    return image, source


def iter_images(docs: list[Document]) -> Iterator[tuple[Image.Image | DocumentError, str]]:
    """Open each document in turn; a failure is yielded as its `DocumentError` instead of raised."""
    for doc in docs:
        try:
            yield load_image(doc)
        except DocumentError as exc:
            yield exc, exc.source or _source(doc)
