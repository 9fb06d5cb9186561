"""`evaluate`: run an extractor over a dataset split and score it every way that matters.

The report holds the reference card's numbers (BLEU in 0..1, TER in percent, computed on the raw model text against
the target JSON text), and the numbers that say which field is wrong: field accuracy per field and per document,
Donut's nTED accuracy and field F1, JSON and schema validity, character error rate on values, and each failure
with the document, the field, what was expected and what came back.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from invoice_vlm.errors import DatasetError, InputError, InvoiceVLMWarning, MissingDependencyError
from invoice_vlm.metrics.base import Case, Metric, list_metrics
from invoice_vlm.parsing import parse_output
from invoice_vlm.schemas import SchemaSpec, resolve_schema

if TYPE_CHECKING:
    from invoice_vlm.extractor import InvoiceExtractor

__all__ = ["EvaluationReport", "evaluate", "score"]


@dataclass
class EvaluationReport:
    """Every metric of one evaluation, renderable as JSON, Markdown and a PNG chart.

    Attributes:
        schema: schema name the documents were scored against.
        num_documents: documents scored.
        metrics: headline numbers, one per registered metric (`invoice_vlm.metrics.list_metrics`): built in are
            ``field_accuracy``, ``document_accuracy``, ``ted_accuracy``, ``field_f1``, ``json_valid_rate``,
            ``schema_valid_rate``, ``character_error_rate``, ``bleu`` (0..1), ``ter`` (percent).
        per_field: accuracy per field path (``products.cases``).
        failures: one entry per field not right: ``document``, ``source``, ``field``, ``kind``, ``expected``, ``got``.
        bleu_detail: the full BLEU result (precisions, brevity penalty, lengths).
        ter_detail: the full TER result (edits, reference length).
        documents: per document: ``source``, ``valid``, ``errors`` (parse/validation), ``prediction``, ``target``.
        info: what was evaluated (backend, prompt, split, dataset).
        signatures: per metric, what produced its number (library versions, tokenizer, smoothing): two reports
            compare honestly only where their signatures agree.
        rows: per metric, ``(label, description, higher_is_better, digits)`` for the report's table.
    """

    schema: str
    num_documents: int
    metrics: dict[str, float]
    per_field: dict[str, float]
    failures: list[dict[str, Any]]
    bleu_detail: dict[str, Any]
    ter_detail: dict[str, Any]
    documents: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)
    rows: dict[str, tuple[str, str, bool, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Everything as plain data."""
        return asdict(self)

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def to_markdown(self, max_failures: int = 50) -> str:
        """A Markdown report: headline metrics, per-field accuracy (worst first), failures."""
        m = self.metrics
        lines = [
            f"# Evaluation: {self.schema} ({self.num_documents} documents)",
            "",
        ]
        if self.info:
            lines += [", ".join(f"{k}: `{v}`" for k, v in self.info.items() if v is not None), ""]
        lines += ["| metric | value | what it says |", "| --- | --- | --- |"]
        for name, value in m.items():
            label, description, _, digits = self.rows.get(name, (name, "", True, 4))
            lines.append(f"| {label} | {value:.{digits}f} | {description} |")
        if self.signatures:
            lines += ["", "Signatures (compare two reports only where these agree):", ""]
            lines += [f"- `{sig}`" for sig in self.signatures.values()]
        lines += [
            "",
            "## Per field (worst first)",
            "",
            "| field | accuracy |",
            "| --- | --- |",
        ]
        for path, acc in sorted(self.per_field.items(), key=lambda kv: (kv[1], kv[0])):
            lines.append(f"| `{path}` | {acc:.4f} |")
        lines += ["", f"## Failures ({len(self.failures)})", ""]
        if self.failures:
            lines += ["| document | field | kind | expected | got |", "| --- | --- | --- | --- | --- |"]
            for f in self.failures[:max_failures]:
                lines.append(
                    f"| {f['source'] or f['document']} | `{f['field']}` | {f['kind']} | "
                    f"{_cell(f['expected'])} | {_cell(f['got'])} |"
                )
            if len(self.failures) > max_failures:
                lines.append(f"\n... and {len(self.failures) - max_failures} more in report.json")
        else:
            lines.append("None: every field of every document is right.")
        return "\n".join(lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Draw per-field accuracy as a horizontal bar chart PNG (needs matplotlib: the ``plot`` extra)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise MissingDependencyError("The per-field chart", "plot", "matplotlib") from None
        items = sorted(self.per_field.items(), key=lambda kv: (kv[1], kv[0]))
        fig, ax = plt.subplots(figsize=(7, 0.32 * len(items) + 1.2))
        ax.barh(
            [k for k, _ in items],
            [v for _, v in items],
            color=["#c0392b" if v < 1 else "#27ae60" for _, v in items],
        )
        ax.set_xlim(0, 1)
        ax.set_xlabel("accuracy")
        ax.set_title(
            f"{self.schema}: field accuracy {self.metrics['field_accuracy']:.3f} ({self.num_documents} docs)"
        )
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``report.json``, ``report.md`` and, when matplotlib is installed, ``per_field.png``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(self.to_json() + "\n", encoding="utf-8")
        (out / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        try:
            self.plot(out / "per_field.png")
        except MissingDependencyError as exc:
            warnings.warn(f"No per_field.png: {exc}", InvoiceVLMWarning, stacklevel=2)
        return out


def _cell(value: Any) -> str:
    text = (
        "—"
        if value is None
        else json.dumps(value, ensure_ascii=False)
        if not isinstance(value, str)
        else value
    )
    return text.replace("|", "\\|")[:80]


def score(
    raw_texts: Sequence[str],
    targets: Sequence[str],
    schema: str | SchemaSpec,
    *,
    sources: Sequence[str | None] | None = None,
    info: dict[str, Any] | None = None,
    metric_objects: Sequence[Metric] | None = None,
) -> EvaluationReport:
    """Score model outputs against target JSON texts, without a model.

    Args:
        raw_texts: what the model wrote, one per document.
        targets: the true JSON, one string per document.
        schema: what valid outputs satisfy (its field kinds say how values compare).
        sources: names of the documents, for the failure list.
        info: free-form facts recorded in the report.
        metric_objects: the metrics to compute; every registered one (`invoice_vlm.metrics.list_metrics`) when
            ``None``.

    Examples:
        >>> from invoice_vlm.metrics import get_metric
        >>> printed = '{"invoice_number": "7", "invoice_date": "3. März 2024", "total": "12,50"}'
        >>> target = '{"invoice_number": "7", "invoice_date": "2024-03-03", "total": 12.5}'
        >>> report = score([printed], [target], "invoice", metric_objects=[get_metric("field_accuracy")])
        >>> report.metrics, report.signatures["field_accuracy"].startswith("field_accuracy|invoice_vlm:")
        ({'field_accuracy': 1.0}, True)
    """
    spec = resolve_schema(schema)
    if len(raw_texts) != len(targets):
        raise InputError(f"{len(raw_texts)} outputs but {len(targets)} targets; they must pair up.")
    if not targets:
        raise InputError("No documents to score.")
    names = list(sources) if sources is not None else [None] * len(targets)
    references = [json.loads(t) for t in targets]
    parsed = [parse_output(t, spec) for t in raw_texts]  # each output is parsed once, here
    # An output that did not validate is scored on what it read (normalised, unvalidated): most fields may be right.
    predictions = [p.to_dict() if p.valid else p.partial for p in parsed]
    case = Case(raw_texts, targets, predictions, references, parsed, spec)
    chosen = list(metric_objects) if metric_objects is not None else list_metrics()
    scores = {metric.name: metric.compute(case) for metric in chosen}
    metrics = {name: s.value for name, s in scores.items()}
    fields = case.fields
    failures = [dict(err, source=names[err["document"]]) for err in fields["errors"]]
    documents = []
    for i, (text, target, result) in enumerate(zip(raw_texts, targets, parsed, strict=True)):
        documents.append(
            {
                "source": names[i],
                "valid": result.valid,
                "errors": result.errors,
                "prediction": text,
                "target": target,
            }
        )
    return EvaluationReport(
        schema=spec.name,
        num_documents=len(targets),
        metrics=metrics,
        per_field=fields["per_field"],
        failures=failures,
        bleu_detail=scores["bleu"].detail if "bleu" in scores else {},
        ter_detail=scores["ter"].detail if "ter" in scores else {},
        documents=documents,
        info=dict(info or {}),
        signatures={name: s.signature for name, s in scores.items()},
        rows={m.name: (m.label, m.description, m.higher_is_better, m.digits) for m in chosen},
    )


def evaluate(
    extractor: InvoiceExtractor,
    dataset: Any,
    split: str = "test",
    *,
    batch_size: int = 8,
    progress: bool = True,
    limit: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> EvaluationReport:
    """Extract every document of a dataset split and score the results.

    Args:
        extractor: what to evaluate.
        dataset: a ``DatasetDict`` or ``Dataset`` with ``image`` and ``target`` columns (as `invoice_vlm.data.load`
            returns), or a path that `invoice_vlm.data.load` reads.
        split: which split of a ``DatasetDict`` or folder.
        batch_size: images per backend call.
        progress: show a progress bar.
        limit: score only the first ``limit`` documents.
        on_error: for a path: ``"raise"`` lists every bad row in one `DatasetError`, ``"skip"`` drops them with a
            warning that counts them.

    Examples:
        >>> # report = invoice_vlm.evaluate(ex, "data/pallets", split="test")
        >>> # report.metrics["field_accuracy"], report.save("eval/")
    """
    source_name = None
    if isinstance(dataset, (str, Path)):
        from invoice_vlm.data import load

        source_name = str(dataset)
        dataset = load(dataset, schema=extractor.schema, on_error=on_error)
    if isinstance(dataset, dict):  # a DatasetDict
        if split not in dataset:
            raise DatasetError(
                [],
                header=f"The dataset has no split {split!r}; it has {', '.join(sorted(dataset)) or 'none'}. "
                "Pick one with split= (--split).",
            )
        dataset = dataset[split]
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise DatasetError([], header=f"Split {split!r} is empty: nothing to evaluate.")
    prefixes = set(dataset["prefix"]) if "prefix" in dataset.column_names else set()
    if prefixes and prefixes != {extractor.prompt}:
        warnings.warn(
            f"The dataset was labelled with prompt(s) {sorted(prefixes)!r} but the extractor sends "
            f"{extractor.prompt!r}; a model answers reliably only the prompt it was trained with.",
            InvoiceVLMWarning,
            stacklevel=2,
        )
    images = list(dataset["image"])
    targets = list(dataset["target"])
    sources = [getattr(img, "filename", None) or f"{split}[{i}]" for i, img in enumerate(images)]
    sources = [Path(s).name if s and not s.startswith(f"{split}[") else s for s in sources]
    # A document of several pages (a reviewed invoice) is read as one, its pages merged, as extraction reads it.
    from invoice_vlm.inputs import OpenedPages

    documents: list[Any] = list(images)
    several = "pages" in dataset.column_names and any(dataset["pages"])
    if several:
        from PIL import Image

        for i, pages in enumerate(dataset["pages"]):
            if pages:
                opened = []
                for page in pages:
                    with Image.open(page) as picture:
                        opened.append(picture.convert("RGB"))
                documents[i] = OpenedPages(tuple(opened), sources[i])
    # Scores need no evidence: the pages are not read again by OCR to locate the values.
    scoring = copy.copy(extractor)
    scoring.evidence = False
    results = scoring.extract_batch(
        documents, batch_size=batch_size, progress=progress, pages="merge" if several else None
    )
    info = {
        "backend": extractor.backend_name,
        "prompt": extractor.prompt,
        "dataset": source_name,
        "split": split,
        "base_model": extractor.info.base_model,
        "adapter": extractor.info.adapter,
        "constrained": extractor.constrained,
    }
    predictions = [
        _merged_text(result, extractor.schema) if isinstance(document, OpenedPages) else result.raw_text
        for document, result in zip(documents, results, strict=True)
    ]
    return score(predictions, targets, extractor.schema, sources=sources, info=info)


def _merged_text(result: Any, schema: Any) -> str:
    """A document read from several pages as the JSON of its merged result (its raw text is the pages' answers)."""
    if result.valid:
        return str(schema.dumps(result.to_dict()))
    return json.dumps(result.partial or {}, ensure_ascii=False, default=str)
