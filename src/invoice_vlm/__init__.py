"""invoice_vlm: photos and scans of invoices, pallet labels and shipping documents to validated JSON.

Examples:
    >>> from invoice_vlm import InvoiceExtractor
    >>> # ex = InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448",
    >>> #     adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label")
    >>> # ex.extract("label.jpg").to_dict()

Importing this package is light: torch, transformers and peft load only when a model is.
"""

from __future__ import annotations

from invoice_vlm.backends import Backend, Generation, GenerationRequest, get_backend, list_backends
from invoice_vlm.config import GenerationSettings, package_version
from invoice_vlm.errors import InvoiceVLMError
from invoice_vlm.evaluation import EvaluationReport, evaluate
from invoice_vlm.extraction import Extraction
from invoice_vlm.extractor import InvoiceExtractor
from invoice_vlm.inputs import PDFPage, load_pages, pdf_pages
from invoice_vlm.schemas import SchemaSpec, get_schema, list_schemas, register_schema

__version__ = package_version()

__all__ = [
    "Backend",
    "EvaluationReport",
    "Extraction",
    "Generation",
    "GenerationRequest",
    "GenerationSettings",
    "InvoiceExtractor",
    "InvoiceVLMError",
    "PDFPage",
    "SchemaSpec",
    "__version__",
    "evaluate",
    "get_backend",
    "get_schema",
    "list_backends",
    "list_schemas",
    "load_pages",
    "pdf_pages",
    "register_schema",
]
