"""`Extraction`: what one document gave, valid or not, with the model's raw text kept verbatim."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from invoice_vlm.evidence import Evidence, Word

__all__ = ["Extraction"]


@dataclass
class Extraction:
    """The result of extracting one document.

    Attributes:
        data: the validated schema instance, or ``None`` when the output did not validate.
        raw_text: exactly what the backend produced (empty when the document could not be read).
        valid: true when ``data`` validated against the schema.
        errors: why the result is not valid; empty when it is.
        confidence: per leaf field path (``"products[0].cases"``) the backend's confidence in ``[0, 1]``;
            empty when the backend reports no scores.
        source: the file name (and page) or a description of the input it came from.
        partial: when not valid, what was read all the same (the parsed, normalised but unvalidated object) so a
            reviewer sees it; ``None`` when valid or when nothing could be parsed.
        field_errors: when not valid, leaf path (``"products[2].cases"``, ``"total"``) -> why that field failed.
            Errors that belong to no field (unparsable output) are only in ``errors``.
        printed: leaf path -> the text as printed, for every value normalisation changed (``"05 Juillet 2015"``
            beside ``"2015-07-05"``): nothing read is lost.
        unreadable: true when the document could not be read at all (the file could not be opened, a needed extra
            is missing, the backend failed on it): nothing was extracted and ``errors`` says why. False for a
            document that was read but whose result is invalid (``valid`` is false, ``partial`` shows what was read).
        evidence: leaf path -> where the value was read (`invoice_vlm.evidence.Evidence`: page, box in 0-1
            coordinates, the printed text, a match score), or ``found=False`` for a value printed nowhere on the
            page (a hint that the model invented it). Empty when the page's text was not available (see
            ``evidence=`` of `InvoiceExtractor`).
        words: the words printed on the document's pages, with their boxes (`invoice_vlm.evidence.Word`), as read
            for ``evidence``; empty when it was not. Not part of `to_record` (the review page shows them).
    """

    data: BaseModel | None
    raw_text: str
    valid: bool
    errors: list[str] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    partial: dict[str, Any] | None = None
    field_errors: dict[str, str] = field(default_factory=dict)
    printed: dict[str, str] = field(default_factory=dict)
    unreadable: bool = False
    evidence: dict[str, Evidence] = field(default_factory=dict)
    words: list[Word] = field(default_factory=list, repr=False, compare=False)

    def needs_review(self, min_confidence: float = 0.8) -> list[str]:
        """Leaf paths a person should check: below ``min_confidence``, failing the schema, or found nowhere on the page.

        Examples:
            >>> Extraction(None, "", False, confidence={"total": 0.5, "number": 0.99}).needs_review()
            ['total']
        """
        flagged = {path for path, score in self.confidence.items() if score < min_confidence}
        flagged |= set(self.field_errors)
        flagged |= {path for path, where in self.evidence.items() if not where.found}
        return sorted(flagged)

    def to_dict(self) -> dict[str, Any]:
        """The extracted JSON object, or ``{}`` when the result is not valid."""
        if not self.valid or self.data is None:
            return {}
        return self.data.model_dump(mode="json")

    def to_record(self) -> dict[str, Any]:
        """Everything as plain JSON-ready data: what the CLI writes, one line per document."""
        return {
            "source": self.source,
            "valid": self.valid,
            "unreadable": self.unreadable,
            "data": self.to_dict() if self.valid else None,
            "partial": self.partial,
            "errors": list(self.errors),
            "field_errors": dict(self.field_errors),
            "confidence": dict(self.confidence),
            "printed": dict(self.printed),
            "evidence": {path: where.to_dict() for path, where in self.evidence.items()},
            "raw_text": self.raw_text,
        }

    @classmethod
    def from_error(
        cls, error: str, *, source: str | None = None, raw_text: str = "", unreadable: bool = True
    ) -> Extraction:
        """An invalid result that says why: by default for a document that could not be read at all.

        Args:
            error: the reason, shown in ``errors``.
            source: where the document came from.
            raw_text: what the backend produced, if anything (output that holds no JSON object).
            unreadable: false when the backend did answer and only its answer is unusable.

        Examples:
            >>> Extraction.from_error("scan.png: not an image file", source="scan.png").unreadable
            True
            >>> Extraction.from_error("no JSON object", raw_text="sorry", unreadable=False).unreadable
            False
        """
        return cls(
            data=None,
            raw_text=raw_text,
            valid=False,
            errors=[error],
            confidence={},
            source=source,
            unreadable=unreadable,
        )

    @classmethod
    def failed(cls, error: str, *, source: str | None = None, raw_text: str = "") -> Extraction:
        """Deprecated: use `Extraction.from_error` (this name read like a boolean; ``unreadable`` is the boolean)."""
        warnings.warn(
            "Extraction.failed() is renamed Extraction.from_error(); the boolean for a document that could not "
            "be read is Extraction.unreadable.",
            DeprecationWarning,
            stacklevel=2,
        )
        return cls.from_error(error, source=source, raw_text=raw_text, unreadable=not raw_text)
