"""One input layer for every entry point: any document in, one RGB image per page out.

`load_document` opens paths, bytes, file objects, PIL images and numpy arrays; PNG, JPEG, WebP, BMP, GIF (its
first frame), TIFF (every frame) and PDF (every page, with pypdfium2). The file's type is read from its first bytes,
not its name. Pixels come out right: EXIF orientation applied (phone photos are often stored sideways), CMYK
converted, transparency laid on white paper, 1-bit, grey, palette, 16-bit and floating-point pages scaled by their
range (a 16-bit scan is not a white page). The size is checked from the file's header before anything is decoded,
against a limit you can set, and every problem is a `DocumentError` that names the document and what to do.

A PDF page that carries a text layer (a born-digital invoice) keeps it beside its image, in
``image.info[TEXT_LAYER]``: the exact characters and where they sit, which the offline reader uses instead of OCR.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

from PIL import Image, ImageOps, UnidentifiedImageError

from invoice_vlm.errors import DocumentError, MissingDependencyError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MAX_PAGES",
    "MAX_PIXELS",
    "MIN_SIDE",
    "PDF_DPI",
    "TEXT_LAYER",
    "Document",
    "OpenedPages",
    "PDFPage",
    "TextRun",
    "describe_source",
    "load_document",
    "load_image",
    "load_pages",
    "pdf_pages",
]

TEXT_LAYER = "invoice_vlm.text_layer"
"""Key in ``image.info`` of a rendered PDF page's text layer: a tuple of `TextRun` in the image's pixels."""

MAX_PIXELS = 64_000_000
"""Larger pages are refused (from the header, before decoding): far beyond what any document VLM reads."""
MAX_PAGES = 500
"""Documents with more pages are refused rather than read in part."""
MIN_SIDE = 8
"""Smaller images are refused: nothing legible fits in fewer pixels."""
PDF_DPI = 150
"""Resolution PDF pages are rendered at unless told otherwise."""

_FORMATS = "PNG, JPEG, WebP, BMP, GIF, TIFF or PDF"
_EVERY_FRAME = {"TIFF", "MPO"}  # multi-page formats whose frames are pages; GIF and WebP frames are animation


@dataclass(frozen=True)
class PDFPage:
    """One page of a PDF file, rendered at ``dpi`` when opened."""

    path: Path
    page: int = 0
    dpi: int = PDF_DPI

    def __str__(self) -> str:
        return f"{self.path.name}#page={self.page + 1}"


@dataclass(frozen=True)
class OpenedPages:
    """A document already opened (by `load_pages` or `load_document`): its RGB pages and its name.

    Passing it to `InvoiceExtractor.extract_batch` reads it without decoding the file again (the HTTP service checks
    an upload this way before queueing it).
    """

    pages: tuple[Image.Image, ...]
    name: str


@dataclass(frozen=True)
class TextRun:
    """A run of text on one line of a PDF page's text layer, with its box in the rendered image's pixels."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float


Document = Union[
    str,
    "os.PathLike[str]",
    bytes,
    bytearray,
    IO[bytes],
    Image.Image,
    "np.ndarray[Any, Any]",
    PDFPage,
    "OpenedPages",
]
"""Anything `load_document` opens: a path, bytes, a binary file object, a PIL image, a numpy array or a `PDFPage`."""


def describe_source(doc: object) -> str:
    """How a document is named in results and errors: its path, or a description (``<1234 bytes>``)."""
    if isinstance(doc, (str, os.PathLike)):
        return os.fspath(doc)
    if isinstance(doc, PDFPage):
        return str(doc)
    if isinstance(doc, OpenedPages):
        return doc.name
    if isinstance(doc, (bytes, bytearray)):
        return f"<{len(doc)} bytes>"
    if isinstance(doc, Image.Image):
        name = getattr(doc, "filename", "") or ""
        return name or f"<PIL image {doc.width}x{doc.height}>"
    if hasattr(doc, "read"):
        name = getattr(doc, "name", None)
        return (
            os.fspath(name) if isinstance(name, (str, os.PathLike)) else f"<{type(doc).__name__} file object>"
        )
    shape = getattr(doc, "shape", None)
    if shape is not None:
        return f"<array {'x'.join(str(n) for n in shape)} {getattr(doc, 'dtype', '')}>"
    return f"<{type(doc).__name__}>"


def _pdfium() -> Any:
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise MissingDependencyError("Reading PDF files", "pdf", "pypdfium2") from None
    return pdfium


def _render_pdf(
    data: Path | bytes,
    source: str,
    dpi: int,
    pages: Sequence[int] | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
    max_pages: int = MAX_PAGES,
) -> tuple[list[Image.Image], int]:
    """Render ``pages`` of a PDF (every page when ``None``) in one opening; returns them and the page count.

    Each page's size is checked before it is rendered; each rendered page keeps its text layer in
    ``image.info[TEXT_LAYER]``.
    """
    pdfium = _pdfium()
    try:
        pdf = pdfium.PdfDocument(str(data) if isinstance(data, Path) else data)
    except pdfium.PdfiumError as exc:  # not a PDF, encrypted, damaged
        reason = str(exc)
        if "password" in reason.lower():
            raise DocumentError(
                f"{source!r} is a password-protected PDF; save a decrypted copy and pass that.",
                source,
                reason="encrypted",
            ) from None
        raise DocumentError(
            f"Cannot read {source!r} as a PDF ({reason}); is the file complete?", source, reason="damaged"
        ) from None
    try:
        count = len(pdf)
        if count == 0:
            raise DocumentError(f"{source!r} is a PDF with no pages.", source, reason="damaged")
        wanted = list(range(count)) if pages is None else list(pages)
        if len(wanted) > max_pages:
            raise DocumentError(
                f"{source!r} has {count} pages, more than max_pages={max_pages}; split it, or raise max_pages.",
                source,
                reason="too_many_pages",
            )
        images = []
        for page in wanted:
            if not 0 <= page < count:
                raise DocumentError(
                    f"{source} has {count} page(s); page {page + 1} does not exist.", source, reason="missing"
                )
            pdf_page = pdf[page]
            width, height = (round(v * dpi / 72) for v in pdf_page.get_size())
            _check_size(width, height, f"{source}#page={page + 1}" if count > 1 else source, max_pixels)
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
    """Group a PDF text page's characters into runs, the way OCR groups words into boxes.

    A run is one line with no gap wider than about an em: words a space apart are one run (``Inv No: CS6871``, as
    OCR reads them, also in a monospaced font), columns are not. A run is as tall as its font (ascent to descent, as
    an OCR box is), so that a line of dashes or dots is not a box two pixels high; its left and right are its inked
    characters'.
    """
    runs: list[TextRun] = []
    text_of_run: list[str] = []
    # The run's visible characters (tight left, bottom, right, top), and the same characters' font boxes.
    inked: list[tuple[float, float, float, float]] = []
    loose: list[tuple[float, float, float, float]] = []

    def close() -> None:
        text = "".join(text_of_run).strip()
        if text and inked:
            runs.append(
                TextRun(
                    text,
                    min(c[0] for c in inked) * scale,
                    (page_height - max(c[3] for c in loose)) * scale,
                    max(c[2] for c in inked) * scale,
                    (page_height - min(c[1] for c in loose)) * scale,
                )
            )
        text_of_run.clear()
        inked.clear()
        loose.clear()

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
        font_box = textpage.get_charbox(i, loose=True)  # type: ignore[attr-defined]
        if inked:
            last_left, _, _, _ = inked[-1]
            last_font_right = loose[-1][2]
            em = max(font_box[3] - font_box[1], top_of_run - bottom_of_run, 1.0)
            same_line = (
                bottom < top_of_run and top > bottom_of_run
            )  # overlapping extents: "1.234,50" is one run
            if not same_line or font_box[0] - last_font_right > em or left < last_left - 0.5 * em:
                close()
        if not inked:
            bottom_of_run, top_of_run = bottom, top
        bottom_of_run, top_of_run = min(bottom_of_run, bottom), max(top_of_run, top)
        text_of_run.append(ch)
        inked.append((left, bottom, right, top))
        loose.append(font_box)
    close()
    return tuple(runs)


def pdf_pages(path: str | os.PathLike[str], dpi: int = PDF_DPI) -> list[PDFPage]:
    """Every page of a PDF as a `PDFPage` (opened one at a time later); most callers want `load_document`.

    Examples:
        >>> # ex.extract_batch(pdf_pages("scan.pdf"))  # one Extraction per page
    """
    p = Path(path)
    pdfium = _pdfium()
    try:
        pdf = pdfium.PdfDocument(str(p))
    except pdfium.PdfiumError as exc:
        raise DocumentError(f"Cannot read {str(p)!r} as a PDF ({exc}).", str(p), reason="damaged") from None
    try:
        return [PDFPage(p, i, dpi) for i in range(len(pdf))]
    finally:
        pdf.close()


def _check_size(width: int, height: int, source: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DocumentError(
            f"{source!r} is {width}x{height} pixels ({width * height:,}), more than max_pixels={max_pixels:,}; "
            "downscale it, or raise max_pixels if it really is one page.",
            source,
            reason="too_large",
        )
    if min(width, height) < MIN_SIDE:
        raise DocumentError(
            f"{source!r} is only {width}x{height} pixels; nothing legible fits.", source, reason="too_small"
        )


def _read_bytes(doc: object, source: str) -> bytes | Path:
    """The document's bytes (or its path, for files): what its type is read from."""
    if isinstance(doc, (str, os.PathLike)):
        path = Path(doc).expanduser()
        if not path.is_file():
            hint = " (it is a folder: pass the files in it)" if path.is_dir() else ""
            raise DocumentError(
                f"Document {source!r} does not exist or is not a file{hint}.", source, reason="missing"
            )
        return path
    if isinstance(doc, (bytes, bytearray, memoryview)):
        return bytes(doc)
    read = getattr(doc, "read", None)
    if callable(read):
        data = read()
        if not isinstance(data, (bytes, bytearray)):
            raise DocumentError(
                f"{source!r} is a text file object; open the file in binary mode ('rb').",
                source,
                reason="unsupported",
            )
        return bytes(data)
    raise DocumentError(
        f"Cannot open a document of type {type(doc).__name__}; pass a path, bytes, a binary file object, a PIL image, "
        "a numpy array or a PDFPage.",
        source,
        reason="unsupported",
    )


def _head(data: bytes | Path) -> bytes:
    if isinstance(data, Path):
        with data.open("rb") as f:
            return f.read(16)
    return data[:16]


def _open_image(data: bytes | Path, source: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only), check the size, then decode: nothing big is decoded before it is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit speaks instead
            image = Image.open(data if isinstance(data, Path) else io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DocumentError(
            f"{source!r} is far too large ({exc}); downscale it, it cannot be one page.",
            source,
            reason="too_large",
        ) from None
    except UnidentifiedImageError:
        head = _head(data)
        shown = head.decode("ascii", "replace") if head.isascii() else head.hex(" ")
        raise DocumentError(
            f"{source!r} is not a {_FORMATS} file (it starts with {shown[:24]!r}); pass an image or a PDF.",
            source,
            reason="unsupported",
        ) from None
    _check_size(image.width, image.height, source, max_pixels)
    return image


def _frames(image: Image.Image, source: str, max_pages: int) -> list[Image.Image]:
    """Every page of a multi-page TIFF (decoded one by one); the first frame of anything else."""
    count = getattr(image, "n_frames", 1) if image.format in _EVERY_FRAME else 1
    if count > max_pages:
        raise DocumentError(
            f"{source!r} has {count} pages, more than max_pages={max_pages}; split it, or raise max_pages.",
            source,
            reason="too_many_pages",
        )
    frames = []
    try:
        for index in range(count):
            if count > 1:
                image.seek(index)
            image.load()
            frame = image.copy() if count > 1 else image
            frame.format = image.format
            frames.append(frame)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DocumentError(
            f"{source!r} is damaged or truncated ({exc}); export it again.", source, reason="damaged"
        ) from None
    return frames


def _from_array(array: Any, source: str) -> Image.Image:
    """A numpy array (H x W, H x W x 3 or 4; integers, booleans or floats) as an image, scaled by its range."""
    import numpy as np

    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] not in (3, 4)):
        raise DocumentError(
            f"{source!r}: an array page must be H x W or H x W x 3/4, got shape {values.shape}.",
            source,
            reason="unsupported",
        )
    if values.dtype == bool:
        values = values.astype(np.uint8) * 255
    elif values.dtype != np.uint8:
        values = _to_bytes(values.astype(np.float64), np.issubdtype(values.dtype, np.floating))
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[values.shape[2] if values.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(values), mode=mode)


def _to_bytes(values: Any, floating: bool) -> Any:
    """Scale values to 0..255 by their range: floats in [0, 1] or 16-bit integers by their type, else min..max."""
    import numpy as np

    high = float(values.max()) if values.size else 0.0
    low = float(values.min()) if values.size else 0.0
    if floating and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0 and not floating:
        scaled = values
    elif low >= 0.0 and high <= 65535.0 and not floating:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    """RGB with the right pixels: 16-bit and float pages scaled by their range, transparency on white paper."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        import numpy as np

        values = np.asarray(image.convert("I") if image.mode.startswith("I;16") else image)
        image = Image.fromarray(_to_bytes(values.astype(np.float64), image.mode == "F"), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, "white")
        paper.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas become paper white, not black
        return paper
    return image if image.mode == "RGB" else image.convert("RGB")


def _open_pages(
    doc: Document, *, dpi: int = PDF_DPI, max_pages: int = MAX_PAGES, max_pixels: int = MAX_PIXELS
) -> list[tuple[Image.Image, str]]:
    if isinstance(doc, OpenedPages):
        if len(doc.pages) == 1:
            return [(doc.pages[0], doc.name)]
        return [(page, f"{doc.name}#page={i + 1}") for i, page in enumerate(doc.pages)]
    source = describe_source(doc)
    if isinstance(doc, PDFPage):
        images, _ = _render_pdf(doc.path, str(doc), doc.dpi, [doc.page], max_pixels=max_pixels)
        return [(_prepared(images[0], str(doc)), str(doc))]
    if isinstance(doc, Image.Image):
        _check_size(doc.width, doc.height, source, max_pixels)
        frames = _frames(doc, source, max_pages) if doc.format in _EVERY_FRAME else [doc]
    elif hasattr(doc, "__array_interface__") and not isinstance(doc, (bytes, bytearray)):
        shape = getattr(doc, "shape", (0, 0))
        _check_size(int(shape[1]) if len(shape) > 1 else 0, int(shape[0]) if shape else 0, source, max_pixels)
        frames = [_from_array(doc, source)]
    else:
        data = _read_bytes(doc, source)
        head = _head(data)
        if not head:
            raise DocumentError(f"{source!r} is empty (0 bytes).", source, reason="empty")
        if head.startswith(b"%PDF-"):
            images, count = _render_pdf(data, source, dpi, max_pixels=max_pixels, max_pages=max_pages)
            names = [source] if count == 1 else [f"{source}#page={i + 1}" for i in range(count)]
            return [(_prepared(image, name), name) for image, name in zip(images, names, strict=True)]
        frames = _frames(_open_image(data, source, max_pixels), source, max_pages)
    names = [source] if len(frames) == 1 else [f"{source}#page={i + 1}" for i in range(len(frames))]
    return [(_prepared(frame, name), name) for frame, name in zip(frames, names, strict=True)]


def load_document(
    source: Document, *, dpi: int = PDF_DPI, max_pages: int = MAX_PAGES, max_pixels: int = MAX_PIXELS
) -> list[Image.Image]:
    """Open any document as one RGB image per page (see the module's description).

    Args:
        source: a path, bytes, a binary file object, a PIL image, a numpy array or a `PDFPage`.
        dpi: resolution PDF pages are rendered at.
        max_pages: a document with more pages is refused (nothing is read in part).
        max_pixels: a page with more pixels is refused, from its header, before it is decoded.

    Raises:
        DocumentError: missing, empty, not an image or PDF, damaged, password-protected, too large or too small;
            the message names the document and what to do.
        MissingDependencyError: a PDF without the ``pdf`` extra (that document only).

    Examples:
        >>> from PIL import Image
        >>> pages = load_document(Image.new("I;16", (40, 30), 40000))
        >>> pages[0].mode, pages[0].getpixel((0, 0))
        ('RGB', (156, 156, 156))
    """
    return [image for image, _ in _open_pages(source, dpi=dpi, max_pages=max_pages, max_pixels=max_pixels)]


def load_pages(
    doc: Document, *, dpi: int = PDF_DPI, max_pages: int = MAX_PAGES, max_pixels: int = MAX_PIXELS
) -> list[tuple[Image.Image, str]]:
    """`load_document` with each page's name: the document's, or ``invoice.pdf#page=2`` when there are several."""
    return _open_pages(doc, dpi=dpi, max_pages=max_pages, max_pixels=max_pixels)


def load_image(doc: Document) -> tuple[Image.Image, str]:
    """Open a one-page document as an RGB image and name its source.

    Raises:
        DocumentError: as `load_document`, or the document has several pages (use `load_document`, or
            `InvoiceExtractor.extract_batch`, which gives one result per page or document).
    """
    pages = _open_pages(doc)
    if len(pages) != 1:
        source = describe_source(doc)
        raise DocumentError(
            f"{source!r} has {len(pages)} pages; use invoice_vlm.inputs.load_document({source!r}) for every page, or "
            "extract_batch for one result per page.",
            source,
            reason="unsupported",
        )
    return pages[0]


def _prepared(image: Image.Image, source: str) -> Image.Image:
    """Size-checked, EXIF-rotated, RGB (16-bit and float scaled, transparency on white), its PDF text layer kept."""
    if min(image.width, image.height) < MIN_SIDE:
        raise DocumentError(
            f"{source!r} is only {image.width}x{image.height} pixels; nothing legible fits.",
            source,
            reason="too_small",
        )
    text_layer = image.info.get(TEXT_LAYER)
    try:
        image = ImageOps.exif_transpose(image) or image
        image = _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as exc:
        raise DocumentError(
            f"{source!r} is damaged or truncated ({exc}); export it again.", source, reason="damaged"
        ) from None
    if text_layer:
        image.info[TEXT_LAYER] = text_layer
    return image
