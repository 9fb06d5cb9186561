"""The ``invoice-vlm`` command: a thin layer over the public API.

``extract`` prints JSON lines, ``evaluate``, ``score``, ``synth`` and ``finetune`` one JSON object, ``schemas``
text (or JSON with ``--json``); progress bars and summaries go to stderr. Exit status: 0 on success, 1 when some
inputs failed, 2 when the command could not run, with the whole reason on stderr, in terms of the command's flags.
A genuine bug shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from invoice_vlm.errors import InvoiceVLMError

__all__ = ["main"]

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


class CLIError(Exception):
    """A reason the command could not run."""


MAX_MESSAGE_LINES = 25
"""An error's lines shown on stderr (a dataset's problems beyond them are counted)."""

# Python spellings in library messages, and the command-line flags that do the same.
_FLAGS = (
    ("on_error='skip'", "--on-error skip"),
    ("constrained=False (--no-constrained)", "--no-constrained"),
    ("constrained=False", "--no-constrained"),
    ("generation=/constrained= (--constrained)", "--max-new-tokens/--constrained"),
    ("overwrite=True (--overwrite)", "--overwrite"),
    ("split= (--split)", "--split"),
    ("drop schema=", "drop --schema"),
    ("device='cpu'", "--device cpu"),
    ("pass --model (model=)", "pass --model"),
    ("with --model (model=)", "with --model"),
)


def _in_flags(message: str) -> str:
    for python, flag in _FLAGS:
        message = message.replace(python, flag)
    return message


def _report_error(command: str, exc: BaseException, err: TextIO) -> None:
    lines = _in_flags(str(exc)).strip().splitlines() or [type(exc).__name__]
    shown = lines[:MAX_MESSAGE_LINES]
    print(f"invoice-vlm {command}: error: {shown[0]}", file=err)
    for line in shown[1:]:
        print(f"  {line.strip()}", file=err)
    if len(lines) > len(shown):
        print(f"  ... and {len(lines) - len(shown)} more line(s)", file=err)


def _cmd_schemas(args: argparse.Namespace) -> int:
    from invoice_vlm.schemas import get_schema, list_schemas

    records = [get_schema(name).describe() for name in list_schemas()]
    if args.json:
        json.dump(records, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return EXIT_OK
    for r in records:
        print(f"{r['name']}  (version {r['version']})")
        print(f"  prompt: {r['prompt']}")
        if r["description"]:
            print(f"  {r['description']}")
        print(f"  fields: {', '.join(r['fields'])}")
    return EXIT_OK


def _check_model_args(args: argparse.Namespace) -> None:
    """What the library would say in Python terms, said with the command's flags, before anything loads."""
    from invoice_vlm.backends._hf import is_local
    from invoice_vlm.config import ExtractorConfig
    from invoice_vlm.schemas import get_schema

    if args.schema is not None:
        get_schema(args.schema)  # a misspelt name lists the registered ones

    for flag, ref in (("--model", args.model), ("--adapter", args.adapter)):
        if ref is not None and is_local(ref) and not Path(ref).expanduser().exists():
            raise CLIError(
                f"{flag} {ref} does not exist (a local path, so the Hub was not asked); check the path."
            )
    saved = any(
        ref is not None and Path(ref).expanduser().is_dir() and ExtractorConfig.exists(Path(ref).expanduser())
        for ref in (args.model, args.adapter)
    )
    if args.schema is None and not saved:
        raise CLIError(
            "--schema is needed (a registered name: invoice-vlm schemas), unless --model is a directory saved by "
            "invoice_vlm, which names its own."
        )


def _quiet_loading(args: argparse.Namespace) -> None:
    """--no-progress hides the weight-loading and download bars of transformers and huggingface_hub too."""
    if not getattr(args, "no_progress", False):
        return
    import importlib.util

    if importlib.util.find_spec("transformers") is not None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def _model_options(args: argparse.Namespace) -> dict[str, Any]:
    """`InvoiceExtractor.from_pretrained`'s arguments after the model, from the model flags."""
    return {
        "adapter": args.adapter,
        "schema": args.schema,
        "backend": args.backend,
        "device": args.device,
        "dtype": args.dtype,
        "constrained": args.constrained,
        "evidence": args.evidence,
        "generation": {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens is not None else None,
    }


def _load_extractor(args: argparse.Namespace) -> Any:
    from invoice_vlm import InvoiceExtractor

    _check_model_args(args)
    _quiet_loading(args)
    return InvoiceExtractor.from_pretrained(args.model, **_model_options(args))


def _written_sources(path: Path) -> tuple[set[str], int]:
    """Sources already in an ``extract --output`` file, and the byte length of its complete lines."""
    sources: set[str] = set()
    good = 0
    with path.open("rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # a line cut off by the interruption: written again
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                break
            if isinstance(record, dict) and isinstance(record.get("source"), str):
                sources.add(record["source"])
            good += len(raw)
    return sources, good


def _done(document: str, written: set[str]) -> bool:
    return document in written or any(s.startswith(f"{document}#page=") for s in written)


_RAY_FLAGS = {
    "num_gpus": "--num-gpus",
    "num_cpus": "--num-cpus",
    "concurrency": "--concurrency",
    "ray_address": "--ray-address",
}


def _refuse_existing(output: Path) -> NoReturn:
    raise CLIError(
        f"--output {output} already exists; pass --resume to skip the documents it holds and add the rest, or "
        "--overwrite to replace it."
    )


def _clear_output(output: Path) -> None:
    """Remove an earlier ``--ray`` output: a JSON-lines file, or a folder holding only Parquet parts."""
    if output.is_file():
        output.unlink()
        return
    others = [p.name for p in output.iterdir() if p.suffix != ".parquet"]
    if others:
        raise CLIError(
            f"--overwrite: {output} holds more than Parquet parts ({', '.join(sorted(others)[:3])}); it is left as "
            "it is. Give another --output."
        )
    for part in output.glob("*.parquet"):
        part.unlink()


def _cmd_extract_ray(args: argparse.Namespace) -> int:
    from invoice_vlm.distributed import extract_files

    if args.output in (None, "-"):
        raise CLIError(
            "--ray writes rows to --output: a FILE.jsonl (JSON lines) or a FOLDER (Parquet parts), not stdout."
        )
    output = Path(args.output)
    _check_model_args(args)  # a misspelt schema or path fails here, not in every actor
    if output.exists() and not args.resume:
        if args.overwrite:
            _clear_output(output)
        elif (output.is_file() and output.stat().st_size > 0) or (output.is_dir() and any(output.iterdir())):
            _refuse_existing(output)
    options = _model_options(args)
    counts = extract_files(
        args.documents,
        output,
        model=args.model,
        adapter=options.pop("adapter"),
        schema=options.pop("schema"),
        backend=options.pop("backend"),
        options=options,
        concurrency=args.concurrency or 1,
        num_gpus=args.num_gpus or 0,
        num_cpus=args.num_cpus if args.num_cpus is not None else 1,
        batch_size=args.batch_size,
        pages=args.pages,
        ray_address=args.ray_address,
    )
    summary = f"{counts['sources']} source(s): {counts['rows']} row(s) written to {output}, {counts['errors']} error(s)"
    if counts["skipped"]:
        summary += f"; {counts['skipped']} already there, skipped"
    print(summary, file=sys.stderr)
    return EXIT_PARTIAL if counts["errors"] else EXIT_OK


def _cmd_extract(args: argparse.Namespace) -> int:
    from invoice_vlm.inputs import describe_source

    if args.ray:
        if args.review_dir is not None:
            raise CLIError("--review-dir queues pages from a plain run; it does not apply with --ray.")
        return _cmd_extract_ray(args)
    given = [flag for key, flag in _RAY_FLAGS.items() if getattr(args, key) is not None]
    if given:
        raise CLIError(f"{', '.join(given)} only apply with --ray (extraction on Ray Data).")
    documents: list[str] = list(args.documents)
    output = None if args.output in (None, "-") else Path(args.output)
    skipped = 0
    if output is not None and output.exists():
        if output.is_dir():
            raise CLIError(f"--output {output} is a folder; give a file name such as results.jsonl.")
        if args.resume:
            written, keep = _written_sources(output)
            with output.open("r+b") as handle:
                handle.truncate(keep)  # drop a line the interruption cut off
            before = len(documents)
            documents = [d for d in documents if not _done(describe_source(d), written)]
            skipped = before - len(documents)
        elif not args.overwrite and output.stat().st_size > 0:
            _refuse_existing(output)
    elif args.resume and output is None:
        raise CLIError("--resume needs --output FILE: it skips the documents that file already holds.")
    queue = None
    if args.review_dir is not None:
        from invoice_vlm.review import ReviewQueue

        queue = ReviewQueue(args.review_dir)  # a file given as the folder fails here, before the model loads
    extractor = _load_extractor(args)
    counts = {"documents": 0, "pages": 0, "valid": 0, "invalid": 0, "failed": 0, "queued": 0, "known": 0}
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        sink: TextIO = output.open("a" if args.resume else "w", encoding="utf-8")
    else:
        sink = sys.stdout
    try:
        for document, results in zip(
            documents,
            extractor.extract_iter(
                documents, batch_size=args.batch_size, progress=not args.no_progress, pages=args.pages
            ),
            strict=True,
        ):
            counts["documents"] += 1
            for result in results:
                failed = result.unreadable
                counts["pages" if not failed else "failed"] += 1
                if not failed:
                    counts["valid" if result.valid else "invalid"] += 1
                sink.write(json.dumps(result.to_record(), ensure_ascii=False) + "\n")
            sink.flush()  # one document at a time: an interrupted run keeps what it finished
            if queue is not None:
                queued, known = queue.add_results(
                    document, results, prompt=extractor.prompt, min_confidence=args.min_confidence
                )
                counts["queued"] += queued
                counts["known"] += known
    finally:
        if sink is not sys.stdout:
            sink.close()
    summary = (
        f"{counts['documents']} document(s), {counts['pages']} result(s) read: {counts['valid']} valid, "
        f"{counts['invalid']} invalid, {counts['failed']} could not be processed"
    )
    if skipped:
        summary += f"; {skipped} already in {output}, skipped"
    if queue is not None:
        summary += f"; {counts['queued']} result(s) queued for review in {args.review_dir}"
        if counts["known"]:
            summary += f" ({counts['known']} already there, not queued again)"
    print(summary, file=sys.stderr)
    return EXIT_PARTIAL if counts["failed"] else EXIT_OK


def _add_model_args(p: argparse.ArgumentParser, *, schema_required: bool = False) -> None:
    p.add_argument(
        "--model",
        "-m",
        help="base model id or dir, adapter id or dir, or a dir saved by invoice_vlm (default: none, for backends "
        "such as ocr that need no model)",
    )
    p.add_argument("--adapter", "-a", help="PEFT adapter id or directory to apply to --model (default: none)")
    p.add_argument(
        "--schema",
        "-s",
        required=schema_required,
        help="registered schema name, see: invoice-vlm schemas (default: the one a saved --model directory names)",
    )
    p.add_argument(
        "--backend",
        "-b",
        help="registered backend name (default: transformers, which reads the model's family from its config.json; or the saved one)",
    )
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available, else cpu)")
    p.add_argument("--dtype", help="bfloat16, float32, ... (default: bfloat16 on cuda, else float32)")
    p.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="constrain decoding to the schema, so every output parses and fits it (default: on when the "
        "'constrained' extra is installed and decoding is greedy, or what the model directory saved)",
    )
    p.add_argument(
        "--evidence",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="locate each value on its page (page and box in the output's 'evidence'; a value printed nowhere is "
        "flagged). Default: where the page's text is at hand: the ocr backend's words, a PDF's text layer, or OCR "
        "of the page when the 'ocr' extra is installed (about a second a page on a CPU)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        help="most tokens generated per page (default: the model directory's, or 512)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``invoice-vlm``."""
    from invoice_vlm.config import package_version

    parser = argparse.ArgumentParser(
        prog="invoice-vlm",
        description="Documents to validated JSON with vision-language models; fine-tuning and evaluation.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"invoice-vlm {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("schemas", help="list registered schemas with their prompts and fields")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of text")
    p.set_defaults(func=_cmd_schemas)

    p = sub.add_parser(
        "extract",
        help="extract documents to JSON lines",
        description="Extract each document (PNG, JPEG, WebP, BMP, GIF, TIFF or PDF) and write one JSON object per "
        "document, or per page for schemas that read pages apart: source, valid, data, partial, errors, "
        "field_errors, confidence, printed, raw_text. Lines are written as documents finish; a summary goes to "
        "stderr.",
    )
    p.add_argument(
        "documents", nargs="+", metavar="DOC", help="image or PDF files (with --ray: folders, globs too)"
    )
    _add_model_args(p)
    p.add_argument("--batch-size", type=_positive_int, default=8, help="pages per model call (default: 8)")
    p.add_argument(
        "--pages",
        choices=("merge", "each"),
        help="multi-page files: one result per document (merge) or per page (each); default: the schema's "
        "(invoice: merge, pallet_label: each)",
    )
    p.add_argument(
        "--output", "-o", help="write JSON lines to this file, one document at a time (default: stdout)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="with --output: skip the documents the file already holds and append the rest",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument(
        "--review-dir",
        type=Path,
        help="also queue the results that need a person (invalid, a field below --min-confidence, or a value printed "
        "nowhere) in this folder, for invoice-vlm serve --review-dir (default: none)",
    )
    p.add_argument(
        "--min-confidence",
        type=_fraction,
        default=0.8,
        help="with --review-dir: fields below it need a person (default: 0.8)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (model loading included)")
    ray = p.add_argument_group(
        "on Ray Data (the 'ray' extra)",
        "With --ray, DOC may be folders, globs or any path pyarrow reads, and rows go to --output: a FILE.jsonl or "
        "a FOLDER of Parquet parts, with an 'error' column; a rerun with --resume skips what is there.",
    )
    ray.add_argument("--ray", action="store_true", help="extract on Ray Data, one model copy per actor")
    ray.add_argument(
        "--concurrency", type=_positive_int, help="actors, each with its own model copy (default: 1)"
    )
    ray.add_argument("--num-gpus", type=_non_negative_float, help="GPUs per actor (default: 0)")
    ray.add_argument(
        "--num-cpus",
        type=_non_negative_float,
        help="CPUs per actor; leave one for reading files (default: 1)",
    )
    ray.add_argument("--ray-address", help="a running Ray cluster to join, e.g. auto (default: a local Ray)")
    p.set_defaults(func=_cmd_extract)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help that keeps the descriptions' lines."""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _parse_split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--split takes three fractions like 0.8,0.1,0.1, got {text!r}"
        ) from None
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--split takes three fractions like 0.8,0.1,0.1, got {text!r}")
    return parts[0], parts[1], parts[2]


def _cmd_synth(args: argparse.Namespace) -> int:
    from invoice_vlm.data.synth import write_dataset

    counts = write_dataset(
        args.schema,
        args.n,
        args.out,
        seed=args.seed,
        style=args.style,
        split=args.split,
        template=args.template,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(json.dumps({"out": str(args.out), "schema": args.schema, "style": args.style, "splits": counts}))
    return EXIT_OK


def _register_synth(sub: Any) -> None:
    p = sub.add_parser(
        "synth",
        help="generate labelled synthetic documents (Roboflow JSONL layout)",
        description="Render N documents with realistic values into OUT/{train,valid,test}/annotations.jsonl "
        "plus images; the same seed gives byte-identical annotations.",
    )
    p.add_argument(
        "--schema", "-s", default="pallet_label", help="pallet_label or invoice (default: pallet_label)"
    )
    p.add_argument("--n", type=_positive_int, required=True, help="number of documents (required)")
    p.add_argument("--out", required=True, type=Path, help="output folder, new or empty (required)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the train/valid/test folders already in --out"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--style",
        choices=("clean", "photo", "rotated", "mixed"),
        default="clean",
        help="scan-clean, phone photo, a clean page turned 90/180/270 degrees, or clean and photo mixed "
        "(default: clean)",
    )
    p.add_argument(
        "--split",
        type=_parse_split,
        default=(0.8, 0.1, 0.1),
        help="train,valid,test fractions (default: 0.8,0.1,0.1)",
    )
    p.add_argument("--template", help="use only this layout template (default: a random one per document)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_synth)


def _headline(report: Any, out: Path | None) -> None:
    summary = {"documents": report.num_documents, **{k: round(v, 6) for k, v in report.metrics.items()}}
    if out is not None:
        summary["report"] = str(out)
    print(json.dumps(summary))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from invoice_vlm.errors import require
    from invoice_vlm.evaluation import evaluate

    require("invoice-vlm evaluate", "data", "datasets")  # before any model loads or any document is read
    require("invoice-vlm evaluate (BLEU and TER)", "metrics", "sacrebleu")
    if args.report is not None:
        require("invoice-vlm evaluate --report (per_field.png)", "plot", "matplotlib")
    extractor = _load_extractor(args)

    def run(model: Any) -> Any:
        return evaluate(
            model,
            args.data,
            split=args.split,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            limit=args.limit,
            on_error="skip" if args.on_error == "skip" else "raise",
        )

    report = run(extractor)
    out = report.save(args.report) if args.report else None
    if args.before is None:
        _headline(report, out)
        return EXIT_OK
    schema = args.schema or extractor.schema.name  # the same schema for both, also when --model saved it
    del extractor  # one model in memory at a time
    options = {**vars(args), "model": args.before, "adapter": None, "schema": schema}
    before = run(_load_extractor(argparse.Namespace(**options)))
    print(_before_after(before, report, args.before, args.model))
    if out is not None:
        print(f"report of --model: {out}", file=sys.stderr)
    return EXIT_OK


def _before_after(before: Any, after: Any, before_name: str, after_name: str | None) -> str:
    """A Markdown table of two models' headline metrics on the same documents."""
    lines = [
        f"{before.num_documents} document(s); before: {before_name}, after: {after_name}",
        "",
        "| metric | before | after | change |",
        "|---|---:|---:|---:|",
    ]
    for name, value in after.metrics.items():
        was = before.metrics.get(name)
        change = "" if was is None else f"{value - was:+.4f}"
        lines.append(f"| {name} | {'' if was is None else f'{was:.4f}'} | {value:.4f} | {change} |")
    return "\n".join(lines)


def _read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                rows.append(line.rstrip("\n"))  # a line of raw model text
    if not rows:
        raise CLIError(f"{path} holds no lines")
    return rows


def _guess_schema(targets: list[str]) -> str:
    from pydantic import ValidationError

    from invoice_vlm.schemas import get_schema, list_schemas

    fits = []
    for name in list_schemas():
        spec = get_schema(name)
        try:
            for t in targets:
                spec.validate_data(json.loads(t))
        except (ValidationError, json.JSONDecodeError):
            continue
        fits.append(name)
    if len(fits) != 1:
        found = ", ".join(fits) if fits else "none"
        raise CLIError(f"cannot tell the schema of the references (fitting: {found}); pass --schema")
    return fits[0]


def _cmd_score(args: argparse.Namespace) -> int:
    from invoice_vlm.data.loading import prediction_text, reference_text
    from invoice_vlm.evaluation import score

    preds = [prediction_text(r) for r in _read_jsonl(args.predictions)]
    refs = []
    for i, row in enumerate(_read_jsonl(args.references)):
        try:
            refs.append(reference_text(row))
        except ValueError as exc:
            raise CLIError(f"{args.references}:{i + 1} {exc}") from None
    pred_names = [Path(n).name for _, n in preds if n]
    ref_names = [Path(n).name for _, n in refs if n]
    if len(pred_names) == len(preds) and len(ref_names) == len(refs) and set(pred_names) == set(ref_names):
        by_name = {Path(n).name: t for t, n in preds if n}
        pairs: list[tuple[str, str, str | None]] = [
            (by_name[Path(n).name], t, Path(n).name) for t, n in refs if n
        ]
    elif len(preds) != len(refs):
        raise CLIError(
            f"{len(preds)} predictions but {len(refs)} references, and their file names do not match one to one"
        )
    else:
        pairs = [(p, r, n) for (p, _), (r, n) in zip(preds, refs, strict=True)]
    targets = [r for _, r, _ in pairs]
    schema = args.schema or _guess_schema(targets)
    report = score(
        [p for p, _, _ in pairs],
        targets,
        schema,
        sources=[n for _, _, n in pairs],
        info={"predictions": str(args.predictions), "references": str(args.references)},
    )
    out = report.save(args.report) if args.report else None
    _headline(report, out)
    return EXIT_OK


def _register_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="extract a dataset split and score it (field accuracy, nTED, F1, validity, BLEU, TER)",
        description="Run the model over a dataset split and print headline metrics as JSON; --report writes "
        "report.json, report.md and per_field.png.",
    )
    _add_model_args(p)
    p.add_argument("--data", required=True, help="dataset folder (Roboflow, Donut or saved HF dataset)")
    p.add_argument("--split", default="test", help="split to evaluate (default: test)")
    p.add_argument(
        "--report",
        type=Path,
        help="directory for report.json, report.md, per_field.png (default: none, only the JSON summary)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="pages per model call (default: 8)")
    p.add_argument("--limit", type=_positive_int, help="evaluate only the first N documents (default: all)")
    p.add_argument(
        "--before",
        metavar="MODEL",
        help="also evaluate this model (the one before fine-tuning) on the same documents and print a before/after "
        "table instead of the JSON summary (default: none)",
    )
    _on_error_flag(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (model loading included)")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "score",
        help="score predictions made elsewhere against references, without a model",
        description="PREDICTIONS: JSON lines from 'invoice-vlm extract', or one predicted JSON object (or raw text) "
        "per line. REFERENCES: Roboflow rows (suffix), Donut rows (ground_truth), or one JSON object per line. "
        "Lines pair up by file name when both sides name every document, else by order.",
    )
    p.add_argument(
        "predictions",
        type=Path,
        help="JSON lines: extract's records, predicted objects, raw text, or dataset rows",
    )
    p.add_argument(
        "references",
        type=Path,
        help="JSON lines: Roboflow rows (suffix), Donut rows (ground_truth), or objects",
    )
    p.add_argument(
        "--schema", "-s", help="schema of the documents (default: the one registered schema they fit)"
    )
    p.add_argument(
        "--report",
        type=Path,
        help="directory for report.json, report.md, per_field.png (default: none, only the JSON summary)",
    )
    p.set_defaults(func=_cmd_score)


def _on_error_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="bad dataset rows: fail lists every one and stops, skip drops them with a count (default: fail)",
    )


def _config_flags(p: argparse.ArgumentParser) -> None:
    import dataclasses
    import typing

    from invoice_vlm.finetune.config import FinetuneConfig

    hints = typing.get_type_hints(FinetuneConfig)
    helps = dict(FinetuneConfig.field_help())
    for f in dataclasses.fields(FinetuneConfig):
        if f.default is not dataclasses.MISSING:
            shown = (
                "none"
                if f.default is None
                else str(f.default).lower()
                if isinstance(f.default, bool)
                else f.default
            )
            helps[f.name] = f"{helps[f.name].rstrip('.')} (default: {shown})"
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            helps[f.name] = f"{helps[f.name].rstrip('.')} (default: {','.join(map(str, value)) or 'none'})"
        else:
            helps[f.name] = f"{helps[f.name].rstrip('.')} (required unless --config gives it)"
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if f.name == "on_error":
            _on_error_flag(p)
            p.set_defaults(on_error=None)
            continue
        text = str(kind)
        if kind is bool:
            p.add_argument(flag, dest=f.name, type=_parse_bool, metavar="true|false", help=helps[f.name])
        elif "dict" in text:
            p.add_argument(flag, dest=f.name, help=helps[f.name])  # JSON, read by FinetuneConfig
        elif "list" in text:
            p.add_argument(flag, dest=f.name, help=helps[f.name] + " (comma-separated)")
        elif kind is int or text == "int | None":
            p.add_argument(flag, dest=f.name, type=int, help=helps[f.name])
        elif kind is float:
            p.add_argument(flag, dest=f.name, type=float, help=helps[f.name])
        else:
            p.add_argument(flag, dest=f.name, help=helps[f.name])


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _cmd_finetune(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from invoice_vlm.finetune import FinetuneConfig, finetune

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(FinetuneConfig)}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "on_error" in overrides:
        overrides["on_error"] = "skip" if overrides["on_error"] == "skip" else "raise"
    from invoice_vlm.errors import require

    require("invoice-vlm finetune", "train", "trl")  # before any data or model loads
    if args.config is not None:
        config = FinetuneConfig.load(args.config, **overrides)
    else:
        missing = [k for k in ("base_model", "data", "schema", "output_dir") if k not in overrides]
        if missing:
            raise CLIError(
                "pass --config cfg.yaml or at least " + ", ".join("--" + k.replace("_", "-") for k in missing)
            )
        config = FinetuneConfig(**overrides)
    result = finetune(config)
    if int(os.environ.get("RANK", "0")) == 0:
        summary = {
            "output_dir": str(result.output_dir),
            **{k: round(v, 6) for k, v in result.metrics.items()},
        }
        print(json.dumps(summary))
    return EXIT_OK


def _register_finetune(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a vision-language model (PaliGemma, Idefics3/SmolVLM, Gemma 3, Qwen-VL, Florence-2; LoRA, QLoRA "
        "or full) on a dataset",
        description="Train with the settings of --config (YAML or JSON); any flag below overrides the file. Works "
        "under torchrun / accelerate launch; only the main process writes. Prints a JSON summary at the end.",
    )
    p.add_argument(
        "--config", "-c", type=Path, help="YAML or JSON file of FinetuneConfig settings (default: flags only)"
    )
    _config_flags(p)
    p.set_defaults(func=_cmd_finetune)


def _read_reviewers(path: Path) -> dict[str, str]:
    """``--reviewers FILE``: a JSON object of reviewer name -> key."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CLIError(f"--reviewers {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise CLIError(f'--reviewers {path} is not JSON ({exc.msg}); write {{"ann": "her key"}}') from None
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()) or not value:
        raise CLIError(f'--reviewers {path} must be a JSON object of name -> key, e.g. {{"ann": "her key"}}')
    return value


def _cmd_reviews(args: argparse.Namespace) -> int:
    from collections import Counter

    from invoice_vlm.review import ReviewQueue, drop_reviewer, review_items

    if not args.review_dir.is_dir():
        raise CLIError(f"{args.review_dir} is not a folder of reviews")
    if args.drop_reviewer:
        dropped = drop_reviewer(args.review_dir, args.drop_reviewer)
        print(
            f"{dropped} document(s) accepted by {args.drop_reviewer} moved to {args.review_dir / 'removed'}",
            file=sys.stderr,
        )
    rows = review_items(args.review_dir)
    summary = {
        "queue": ReviewQueue(args.review_dir).progress(),
        "accepted": {split: sum(1 for row in rows if row["split"] == split) for split in ("train", "test")},
        "by_reviewer": dict(Counter(str(row.get("reviewer")) for row in rows)),
    }
    print(json.dumps(summary))
    return EXIT_OK


def _register_reviews(sub: Any) -> None:
    p = sub.add_parser(
        "reviews",
        help="what a review folder holds (queue, accepted documents per reviewer); remove one reviewer's work",
        description="Print the review queue's progress and the accepted documents by split and reviewer as JSON. "
        "--drop-reviewer moves that reviewer's accepted documents out of the dataset (to REVIEW_DIR/removed/).",
    )
    p.add_argument("review_dir", type=Path, metavar="REVIEW_DIR", help="the folder given to --review-dir")
    p.add_argument(
        "--drop-reviewer", metavar="NAME", help="remove this reviewer's accepted documents (default: none)"
    )
    p.set_defaults(func=_cmd_reviews)


def _cmd_serve(args: argparse.Namespace) -> int:
    import os

    from invoice_vlm.errors import require

    require("invoice-vlm serve", "serve", "fastapi", "uvicorn", "prometheus_client", "python_multipart")
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise CLIError(f"--api-key-env {args.api_key_env}: that environment variable is not set or empty")
    if args.review_dir is not None and args.review_dir.exists() and not args.review_dir.is_dir():
        raise CLIError(f"--review-dir {args.review_dir} is a file; give a folder")
    reviewers = _read_reviewers(args.reviewers) if args.reviewers is not None else {}
    import uvicorn

    from invoice_vlm.serve import ServeConfig, create_app

    extractor = _load_extractor(args)
    config = ServeConfig(
        review_dir=args.review_dir,
        api_key=api_key,
        max_upload_mb=args.max_upload_mb,
        max_pages=args.max_pages,
        queue_size=args.queue_size,
        timeout_s=args.timeout,
        batch_size=args.batch_size,
        min_confidence=args.min_confidence,
        reviewers=reviewers,
        lease_s=args.lease_minutes * 60,
        holdout=args.holdout,
    )
    print(
        f"invoice-vlm serve: http://{args.host}:{args.port}/ (review page), /v1/extract, /metrics",
        file=sys.stderr,
    )
    uvicorn.run(create_app(extractor, config), host=args.host, port=args.port, log_level="warning")
    return EXIT_OK


def _register_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve extraction over HTTP, with a review page whose corrections become training data",
        description="Run an HTTP service: POST /v1/extract (multipart field 'file'), a review page at /, "
        "/healthz, /readyz and /metrics. Accepted reviews go to --review-dir as a dataset that "
        "invoice_vlm.data.load reads. Nothing is fetched from URLs a client names.",
    )
    _add_model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument(
        "--review-dir", type=Path, help="folder for accepted reviews (default: none, reviews refused)"
    )
    p.add_argument(
        "--api-key-env",
        help="name of an environment variable holding the API key clients must send (default: none, open)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=8, help="pages per model call (default: 8)")
    p.add_argument("--max-upload-mb", type=float, default=25.0, help="largest upload (default: 25)")
    p.add_argument(
        "--max-pages", type=_positive_int, default=20, help="most pages per document (default: 20)"
    )
    p.add_argument(
        "--queue-size", type=_positive_int, default=64, help="documents waiting before 503 (default: 64)"
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait (default: 120)")
    p.add_argument(
        "--min-confidence",
        type=_fraction,
        default=0.8,
        help="fields below it are flagged for review (default: 0.8)",
    )
    p.add_argument(
        "--reviewers",
        type=Path,
        help="JSON file of reviewer name -> key; requests need one of the keys, and each accepted document "
        "records its reviewer (default: none)",
    )
    p.add_argument(
        "--lease-minutes",
        type=float,
        default=15.0,
        help="how long a queued document stays with the reviewer who opened it (default: 15)",
    )
    p.add_argument(
        "--holdout",
        type=_fraction,
        default=0.2,
        help="share of accepted documents kept in REVIEW_DIR/test/ to evaluate on (default: 0.2)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide model-loading bars (default: shown)")
    p.set_defaults(func=_cmd_serve)


_EXTRA_COMMANDS: list[Callable[[Any], None]] = [
    _register_synth,
    _register_evaluate,
    _register_finetune,
    _register_serve,
    _register_reviews,
]


def main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Run ``invoice-vlm``; returns the exit status.

    A user's mistake (any `InvoiceVLMError`, a file that cannot be read or written) is reported in full on stderr,
    in terms of the flags, with exit status 2; anything else is a bug and shows its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    err = stderr or sys.stderr
    try:
        return int(args.func(args))
    except (InvoiceVLMError, CLIError, OSError) as exc:
        _report_error(args.command, exc, err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"invoice-vlm {args.command}: interrupted", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())
