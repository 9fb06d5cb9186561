"""`evaluate`: run an extractor over a dataset split and score it every way that matters.

The report holds the reference card's numbers (BLEU in 0..1, TER in percent, computed on the raw model text against
the target JSON text), and the numbers that say which field is wrong: field accuracy per field and per document,
Donut's nTED accuracy and field F1, JSON and schema validity, character error rate on values, and each failure
with the document, the field, what was expected and what came back.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.errors import InvoiceVLMWarning, MissingDependencyError
from invoice_vlm.metrics import (
    bleu,
    field_accuracy,
    field_f1,
    ted_accuracy,
    ter,
)
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
        metrics: headline numbers: ``field_accuracy``, ``document_accuracy``, ``ted_accuracy``, ``field_f1``,
            ``json_valid_rate``, ``schema_valid_rate``, ``character_error_rate``, ``bleu`` (0..1), ``ter`` (percent).
        per_field: accuracy per field path (``products.cases``).
        failures: one entry per field not right: ``document``, ``source``, ``field``, ``kind``, ``expected``, ``got``.
        bleu_detail: the full BLEU result (precisions, brevity penalty, lengths).
        ter_detail: the full TER result (edits, reference length).
        documents: per document: ``source``, ``valid``, ``errors`` (parse/validation), ``prediction``, ``target``.
        info: what was evaluated (backend, prompt, split, dataset).
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
        lines += [
            "| metric | value | what it says |",
            "| --- | --- | --- |",
            f"| field accuracy | {m['field_accuracy']:.4f} | share of all fields that came back exactly right |",
            f"| document accuracy | {m['document_accuracy']:.4f} | share of documents with every field right |",
            f"| nTED accuracy | {m['ted_accuracy']:.4f} | Donut's tree-edit-distance accuracy |",
            f"| field F1 | {m['field_f1']:.4f} | Donut's micro F1 over (field, value) pairs |",
            f"| JSON valid | {m['json_valid_rate']:.4f} | share of outputs holding a JSON object |",
            f"| schema valid | {m['schema_valid_rate']:.4f} | share that also validate against the schema |",
            f"| value CER | {m['character_error_rate']:.4f} | character error rate over field values |",
            f"| BLEU | {m['bleu']:.4f} | n-gram overlap of the raw text (0..1), as model cards report it |",
            f"| TER | {m['ter']:.2f} | edit rate of the raw text in percent, lower is better |",
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
) -> EvaluationReport:
    """Score model outputs against target JSON texts, without a model.

    Args:
        raw_texts: what the model wrote, one per document.
        targets: the true JSON, one string per document.
        schema: what valid outputs satisfy (numbers typed by it compare as numbers).
        sources: names of the documents, for the failure list.
        info: free-form facts recorded in the report.
    """
    spec = resolve_schema(schema)
    if len(raw_texts) != len(targets):
        raise ValueError(f"{len(raw_texts)} outputs but {len(targets)} targets; they must pair up.")
    names = list(sources) if sources is not None else [None] * len(targets)
    references = [json.loads(t) for t in targets]
    parsed = [parse_output(t, spec) for t in raw_texts]  # each output is parsed once, here
    # An output that did not validate is scored on what it read (normalised, unvalidated): most fields may be right.
    predictions = [p.to_dict() if p.valid else p.partial for p in parsed]
    fields = field_accuracy(predictions, references, schema=spec)
    bleu_result = bleu(list(raw_texts), list(targets))
    ter_result = ter(list(raw_texts), list(targets))
    metrics = {
        "field_accuracy": fields["field_accuracy"],
        "document_accuracy": fields["document_accuracy"],
        "ted_accuracy": ted_accuracy(predictions, references)["ted_accuracy"],
        "field_f1": field_f1(predictions, references)["f1"],
        "json_valid_rate": sum(p is not None for p in predictions) / len(targets),
        "schema_valid_rate": sum(p.valid for p in parsed) / len(targets),
        "character_error_rate": fields["character_error_rate"],
        "bleu": bleu_result["bleu"],
        "ter": ter_result["score"],
    }
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
        bleu_detail=bleu_result,
        ter_detail=ter_result,
        documents=documents,
        info=dict(info or {}),
    )


def evaluate(
    extractor: InvoiceExtractor,
    dataset: Any,
    split: str = "test",
    *,
    batch_size: int = 8,
    progress: bool = True,
    limit: int | None = None,
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

    Example:
        >>> # report = invoice_vlm.evaluate(ex, "data/pallets", split="test")
        >>> # report.metrics["field_accuracy"], report.save("eval/")
    """
    source_name = None
    if isinstance(dataset, (str, Path)):
        from invoice_vlm.data import load

        source_name = str(dataset)
        dataset = load(dataset, schema=extractor.schema)
    if isinstance(dataset, dict):  # a DatasetDict
        if split not in dataset:
            raise KeyError(f"The dataset has no split {split!r}; it has {', '.join(sorted(dataset))}.")
        dataset = dataset[split]
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    if len(dataset) == 0:
        raise ValueError(f"Split {split!r} is empty: nothing to evaluate.")
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
    results = extractor.extract_batch(images, batch_size=batch_size, progress=progress)
    info = {
        "backend": extractor.backend_name,
        "prompt": extractor.prompt,
        "dataset": source_name,
        "split": split,
        "base_model": getattr(extractor.backend, "base_model", None),
        "adapter": getattr(extractor.backend, "adapter", None),
    }
    return score([r.raw_text for r in results], targets, extractor.schema, sources=sources, info=info)
