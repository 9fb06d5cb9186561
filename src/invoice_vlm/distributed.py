"""Batch extraction on Ray Data: many files, many workers, one row per document or page, nothing dropped.

``extract_files(sources, output, ...)`` (and ``invoice-vlm extract SOURCES --ray``) lists the files (a folder, a glob
or paths; any path pyarrow's filesystems read), reads them with ``ray.data.read_binary_files``, and runs
``map_batches`` with a callable class that loads one `InvoiceExtractor` per actor (any backend, by name, or a
``make_extractor`` function) and extracts each batch of files with `InvoiceExtractor.extract_iter`. Every result is
one row (one per document, or per page for schemas that read pages apart): the columns ``invoice-vlm extract``
writes, JSON-encoded where nested, and ``error``, set when the file could not be read or extracted. The rows go to
a JSON-lines file or a Parquet folder; a rerun skips the sources already written there.

Needs the ``ray`` extra; ``import invoice_vlm`` never imports ray.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from invoice_vlm.errors import DocumentError, InputError, MissingDependencyError, require
from invoice_vlm.extraction import Extraction

__all__ = ["COLUMNS", "ExtractActor", "extract_files", "list_sources"]

COLUMNS = (*Extraction.from_error("").to_record(), "error")
"""The columns of every row; nested values are JSON strings (Parquet needs one type per column)."""
_JSON = ("data", "partial", "errors", "field_errors", "confidence", "printed", "evidence")
_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pdf"}


def list_sources(sources: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files to extract, in order: a folder's documents (recursively, sorted), a glob's matches, or a path as is.

    A path that matches nothing is kept, so its row says it does not exist instead of it vanishing.
    """
    out: list[str] = []
    for source in sources:
        text = os.fspath(source)
        if "://" in text:
            out.append(text)  # a remote path: pyarrow's filesystems read it
        elif Path(text).is_dir():
            files = sorted(p for p in Path(text).rglob("*") if p.is_file() and p.suffix.lower() in _SUFFIXES)
            out.extend(str(p) for p in files)
        elif any(ch in text for ch in "*?["):
            out.extend(sorted(glob.glob(text, recursive=True)))
        else:
            out.append(text)
    return list(dict.fromkeys(out))


def _row(record: dict[str, Any], error: str | None) -> dict[str, Any]:
    row = {key: record.get(key) for key in COLUMNS if key != "error"}
    for key in _JSON:
        row[key] = json.dumps(row[key], ensure_ascii=False)
    row["error"] = error
    return row


def _failed_row(source: str, message: str) -> dict[str, Any]:
    return _row(Extraction.from_error(message, source=source).to_record(), message)


class ExtractActor:
    """Ray Data's callable class: one extractor per actor, loaded once, then a batch of files per call."""

    def __init__(
        self, make_extractor: Callable[[], Any], batch_size: int = 8, pages: str | None = None
    ) -> None:
        self.extractor = make_extractor()
        self.batch_size = batch_size
        self.pages = pages

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        """Extract a batch of files (``bytes``, ``path``) into rows, one per document or page, in order."""
        from invoice_vlm.inputs import OpenedPages, load_pages

        documents: list[Any] = []
        rows: list[list[dict[str, Any]] | None] = []
        for data, path in zip(batch["bytes"], batch["path"], strict=True):
            source = str(path)
            try:
                pages = load_pages(bytes(data))
            except (DocumentError, MissingDependencyError) as exc:
                message = str(exc).replace(f"<{len(data)} bytes>", source)
                rows.append([_failed_row(source, message)])
                continue
            documents.append(OpenedPages(tuple(page for page, _ in pages), source))
            rows.append(None)
        results = iter(
            self.extractor.extract_iter(
                documents, batch_size=self.batch_size, progress=False, pages=self.pages
            )
        )
        out: list[dict[str, Any]] = []
        for ready in rows:
            if ready is not None:
                out.extend(ready)
                continue
            for result in next(results):
                record = result.to_record()
                failed = result.unreadable
                out.append(_row(record, result.errors[0] if failed and result.errors else None))
        return {key: [row[key] for row in out] for key in COLUMNS}


def _written(output: Path, parquet: bool) -> set[str]:
    """Sources already in the output (a rerun skips them); a page row ``x.pdf#page=2`` counts for ``x.pdf``."""
    if not output.exists():
        return set()
    sources: list[str] = []
    if parquet:
        import pyarrow.parquet as pq

        for part in sorted(output.glob("*.parquet")):
            sources.extend(pq.read_table(part, columns=["source"]).column("source").to_pylist())
    else:
        for line in output.read_text(encoding="utf-8").splitlines():
            try:
                sources.append(json.loads(line)["source"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return {s.split("#page=", 1)[0] for s in sources if isinstance(s, str)}


def extract_files(
    sources: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    model: str | None = None,
    adapter: str | None = None,
    schema: str | None = None,
    backend: str | None = None,
    options: Mapping[str, Any] | None = None,
    make_extractor: Callable[[], Any] | None = None,
    concurrency: int = 1,
    num_gpus: float = 0,
    num_cpus: float = 1,
    batch_size: int = 8,
    files_per_task: int = 16,
    pages: str | None = None,
    resume: bool = True,
    ray_address: str | None = None,
) -> dict[str, int]:
    """Extract files on Ray Data and write one row per document or page (see the module's description).

    Args:
        sources: folders, globs or file paths (local, or any path pyarrow's filesystems read).
        output: ``*.jsonl`` (rows appended, one line each) or a folder for Parquet files.
        model: model id or directory each actor loads with `InvoiceExtractor.from_pretrained`.
        adapter: adapter to apply to ``model``.
        schema: registered schema name (a saved model directory names its own).
        backend: registered backend name.
        options: more `InvoiceExtractor.from_pretrained` arguments (``device``, ``dtype``, ``generation``,
            ``constrained``, backend options such as the vllm backend's ``engine_options``).
        make_extractor: instead of the five above, a function (picklable) that returns an extractor; called once per
            actor.
        concurrency: actors (model copies).
        num_gpus: GPUs per actor.
        num_cpus: CPUs per actor (leave one for reading files: on a 2-CPU machine two actors need 0.5 each).
        batch_size: pages per model call inside an actor.
        files_per_task: files per Ray batch.
        pages: ``"merge"`` or ``"each"`` for multi-page files (the schema's choice by default).
        resume: skip sources already in ``output``.
        ray_address: a running cluster to join (``"auto"``); a local one by default.

    Returns:
        Counts: ``sources``, ``skipped`` (already written), ``rows``, ``errors``.
    """
    require("Distributed extraction", "ray", "ray", "pyarrow")
    if make_extractor is None:
        if schema is None and model is None:
            raise InputError("extract_files needs schema= (and model= or backend=), or make_extractor=.")

        def make_extractor() -> Any:
            from invoice_vlm import InvoiceExtractor

            return InvoiceExtractor.from_pretrained(
                model, adapter=adapter, schema=schema, backend=backend, **dict(options or {})
            )

    import ray

    out = Path(output)
    parquet = out.suffix.lower() != ".jsonl"
    files = list_sources(sources)
    done = _written(out, parquet) if resume else set()
    todo = [f for f in files if f not in done]
    local = [f for f in todo if "://" not in f]
    missing = [f for f in local if not Path(f).is_file()]
    readable = [f for f in todo if f not in set(missing)]
    rows: list[dict[str, Any]] = [
        _failed_row(f, f"Document {f!r} does not exist or is not a file.") for f in missing
    ]
    if not ray.is_initialized():
        ray.init(address=ray_address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    if readable:
        dataset = ray.data.read_binary_files(readable, include_paths=True)
        dataset = dataset.map_batches(
            ExtractActor,
            fn_constructor_kwargs={
                "make_extractor": make_extractor,
                "batch_size": batch_size,
                "pages": pages,
            },
            batch_size=files_per_task,
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_gpus=num_gpus,
            num_cpus=num_cpus,
            batch_format="numpy",
        )
        rows.extend(dataset.iter_rows())
    order = {f: i for i, f in enumerate(files)}
    rows.sort(key=lambda r: (order.get(str(r["source"]).split("#page=", 1)[0], len(order)), str(r["source"])))
    _write(rows, out, parquet)
    return {
        "sources": len(files),
        "skipped": len(files) - len(todo),
        "rows": len(rows),
        "errors": sum(1 for r in rows if r["error"]),
    }


def _write(rows: list[dict[str, Any]], out: Path, parquet: bool) -> None:
    clean = [{key: (None if row[key] is None else _plain(row[key])) for key in COLUMNS} for row in rows]
    if parquet:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out.mkdir(parents=True, exist_ok=True)
        if clean:
            index = len(list(out.glob("*.parquet")))
            pq.write_table(pa.Table.from_pylist(clean), out / f"part-{index:05d}.parquet")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as handle:
        for row in clean:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _plain(value: Any) -> Any:
    """Numpy scalars (what Ray hands back) as plain Python values."""
    item = getattr(value, "item", None)
    return item() if callable(item) and not isinstance(value, (str, bytes)) else value
