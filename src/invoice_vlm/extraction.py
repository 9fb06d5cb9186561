"""`Extraction`: what one document gave, valid or not, with the model's raw text kept verbatim."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

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
            "data": self.to_dict() if self.valid else None,
            "partial": self.partial,
            "errors": list(self.errors),
            "field_errors": dict(self.field_errors),
            "confidence": dict(self.confidence),
            "printed": dict(self.printed),
            "raw_text": self.raw_text,
        }

    @classmethod
    def failed(cls, error: str, *, source: str | None = None, raw_text: str = "") -> Extraction:
        """A result for an input that produced nothing usable, saying why."""
        return cls(data=None, raw_text=raw_text, valid=False, errors=[error], confidence={}, source=source)
