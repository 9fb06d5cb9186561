"""The ``invoice-vlm`` command: a thin layer over the public API.

Every command prints JSON (or JSON lines) that scripts can read, shows progress bars on stderr for long work, and
exits 0 on success, 1 when some inputs failed, 2 when it could not run at all, with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from invoice_vlm.errors import InvoiceVLMError

__all__ = ["main"]

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


class CLIError(Exception):
    """A reason the command could not run, printed as one line."""


def _write_jsonl(records: Sequence[dict[str, Any]], output: str | None) -> None:
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if output is None or output == "-":
        sys.stdout.write(lines)
        sys.stdout.flush()
        return
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines, encoding="utf-8")


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


def _load_extractor(args: argparse.Namespace) -> Any:
    from invoice_vlm import InvoiceExtractor

    return InvoiceExtractor.from_pretrained(
        args.model,
        adapter=args.adapter,
        schema=args.schema,
        backend=args.backend,
        device=args.device,
        dtype=args.dtype,
        constrained=args.constrained,
        **_generation_override(args),
    )


def _generation_override(args: argparse.Namespace) -> dict[str, Any]:
    """``generation=`` for --max-new-tokens: the saved settings with that one changed."""
    if args.max_new_tokens is None:
        return {}
    from invoice_vlm.config import CONFIG_NAME, ExtractorConfig

    saved: dict[str, Any] = {}
    for ref in (args.adapter, args.model):
        if ref is not None and (Path(ref).expanduser() / CONFIG_NAME).is_file():
            saved = dict(ExtractorConfig.load(Path(ref).expanduser()).generation)
            break
    return {"generation": {**saved, "max_new_tokens": args.max_new_tokens}}


def _cmd_extract(args: argparse.Namespace) -> int:
    extractor = _load_extractor(args)
    results = extractor.extract_batch(
        list(args.documents), batch_size=args.batch_size, progress=not args.no_progress, pages=args.pages
    )
    _write_jsonl([r.to_record() for r in results], args.output)
    unread = [r for r in results if r.raw_text == "" and not r.valid]
    invalid = sum(1 for r in results if not r.valid)
    print(
        f"{len(results)} document(s): {len(results) - invalid} valid, {invalid} invalid"
        + (f", {len(unread)} could not be processed" if unread else ""),
        file=sys.stderr,
    )
    return EXIT_PARTIAL if unread else EXIT_OK


def _add_model_args(p: argparse.ArgumentParser, *, schema_required: bool = False) -> None:
    p.add_argument(
        "--model", "-m", help="base model id or dir, adapter id or dir, or a dir saved by invoice_vlm"
    )
    p.add_argument("--adapter", "-a", help="PEFT adapter id or directory to apply to --model")
    p.add_argument(
        "--schema", "-s", required=schema_required, help="registered schema name (see: invoice-vlm schemas)"
    )
    p.add_argument("--backend", "-b", help="registered backend name (default: paligemma)")
    p.add_argument("--device", help="cuda, cpu, ... (default: cuda when available)")
    p.add_argument("--dtype", help="bfloat16, float32, ... (default: bfloat16 on cuda, else float32)")
    p.add_argument(
        "--constrained",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="constrain decoding to the schema, so every output parses and fits it (default: on when the "
        "'constrained' extra is installed and decoding is greedy, or what the model directory saved)",
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
    )
    parser.add_argument("--version", action="version", version=f"invoice-vlm {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("schemas", help="list registered schemas with their prompts and fields")
    p.add_argument("--json", action="store_true", help="print a JSON array instead of text")
    p.set_defaults(func=_cmd_schemas)

    p = sub.add_parser(
        "extract",
        help="extract documents to JSON lines",
        description="Extract each document (image or PDF; PDFs give one line per page) and print one JSON object "
        "per document: source, valid, data, errors, confidence, raw_text.",
    )
    p.add_argument("documents", nargs="+", metavar="DOC", help="image or PDF files")
    _add_model_args(p)
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    p.add_argument(
        "--pages",
        choices=("merge", "each"),
        help="multi-page files: one result per document (merge) or per page (each); default: the schema's "
        "(invoice: merge, pallet_label: each)",
    )
    p.add_argument("--output", "-o", help="write JSON lines to this file instead of stdout")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_extract)
    for register in _EXTRA_COMMANDS:
        register(sub)
    return parser


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
    p.add_argument("--n", type=int, required=True, help="number of documents")
    p.add_argument("--out", required=True, type=Path, help="output directory")
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
    from invoice_vlm.evaluation import evaluate

    extractor = _load_extractor(args)
    report = evaluate(
        extractor,
        args.data,
        split=args.split,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        limit=args.limit,
    )
    out = report.save(args.report) if args.report else None
    _headline(report, out)
    return EXIT_OK


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
    p.add_argument("--report", type=Path, help="directory for report.json, report.md, per_field.png")
    p.add_argument("--batch-size", type=int, default=8, help="images per model call (default: 8)")
    p.add_argument("--limit", type=int, help="evaluate only the first N documents")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "score",
        help="score predictions made elsewhere against references, without a model",
        description="PREDICTIONS: JSON lines from 'invoice-vlm extract', or one predicted JSON object (or raw text) "
        "per line. REFERENCES: Roboflow rows (suffix), Donut rows (ground_truth), or one JSON object per line. "
        "Lines pair up by file name when both sides name every document, else by order.",
    )
    p.add_argument("predictions", type=Path)
    p.add_argument("references", type=Path)
    p.add_argument(
        "--schema", "-s", help="schema of the documents (default: the one registered schema they fit)"
    )
    p.add_argument("--report", type=Path, help="directory for report.json, report.md, per_field.png")
    p.set_defaults(func=_cmd_score)


def _config_flags(p: argparse.ArgumentParser) -> None:
    import dataclasses
    import typing

    from invoice_vlm.finetune.config import FinetuneConfig

    hints = typing.get_type_hints(FinetuneConfig)
    helps = FinetuneConfig.field_help()
    for f in dataclasses.fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        text = str(kind)
        if kind is bool:
            p.add_argument(flag, dest=f.name, type=_parse_bool, metavar="true|false", help=helps[f.name])
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
        help="fine-tune PaliGemma (LoRA, QLoRA or full) on a dataset",
        description="Train with the settings of --config (YAML or JSON); any flag below overrides the file. Works "
        "under torchrun / accelerate launch; only the main process writes. Prints a JSON summary at the end.",
    )
    p.add_argument("--config", "-c", type=Path, help="YAML or JSON file of FinetuneConfig settings")
    _config_flags(p)
    p.set_defaults(func=_cmd_finetune)


_EXTRA_COMMANDS: list[Callable[[Any], None]] = [_register_synth, _register_evaluate, _register_finetune]


def main(argv: Sequence[str] | None = None, *, stderr: TextIO | None = None) -> int:
    """Run ``invoice-vlm``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    err = stderr or sys.stderr
    try:
        return int(args.func(args))
    except (InvoiceVLMError, CLIError, OSError, ValueError, TypeError) as exc:
        message = (
            " ".join(str(exc).split()) if not isinstance(exc, InvoiceVLMError) else str(exc).splitlines()[0]
        )
        print(f"invoice-vlm {args.command}: error: {message}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"invoice-vlm {args.command}: interrupted", file=err)
        return 130


if __name__ == "__main__":
    sys.exit(main())
