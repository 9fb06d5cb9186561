"""Load Roboflow/PaliGemma JSONL, Donut ``metadata.jsonl`` and Hugging Face datasets, validating every row.

Every problem in a dataset (a target that is not JSON or does not fit the schema, a missing or unreadable image, an
image path that leaves the dataset folder) is collected and raised together as one `DatasetError`, with file and
line, so a dataset is fixed in one pass. ``on_error="skip"`` drops the bad rows instead, with a count in a warning.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from invoice_vlm.errors import DatasetError, DatasetProblem, InputError, InvoiceVLMWarning, require
from invoice_vlm.schemas import SchemaSpec, resolve_schema

if TYPE_CHECKING:
    from datasets import DatasetDict

__all__ = ["FORMATS", "SPLIT_NAMES", "Record", "load", "prediction_text", "read_records", "reference_text"]

Format = Literal["auto", "roboflow", "donut", "hf"]
FORMATS: tuple[str, ...] = ("roboflow", "donut", "hf")
SPLIT_NAMES = ("train", "valid", "validation", "val", "test")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


@dataclass(frozen=True)
class Record:
    """One validated example: an image file, the prompt it was labelled with, and its JSON target.

    ``pages``: every page's image, in order, for a document of several pages (its ``image`` is the first); empty for
    a one-page document.
    """

    image: Path
    prefix: str
    target: str
    file: str
    line: int
    pages: tuple[Path, ...] = ()


def _roboflow_files(root: Path) -> dict[str, tuple[Path, Path]]:
    """Map each split to (annotation file, image folder) in the layouts Roboflow and maestro write."""
    found: dict[str, tuple[Path, Path]] = {}
    for split in SPLIT_NAMES:
        for candidate, images in (
            (root / split / "annotations.jsonl", root / split),
            (root / split / f"_annotations.{split}.jsonl", root / split),
            (root / f"_annotations.{split}.jsonl", root),
        ):
            if candidate.is_file():
                found[split] = (candidate, images)
                break
    return found


def _donut_files(root: Path) -> dict[str, tuple[Path, Path]]:
    return {
        split: (root / split / "metadata.jsonl", root / split)
        for split in SPLIT_NAMES
        if (root / split / "metadata.jsonl").is_file()
    }


def _detect(root: Path) -> Format:
    if _roboflow_files(root):
        return "roboflow"
    if _donut_files(root):
        return "donut"
    if (root / "dataset_dict.json").is_file() or (root / "dataset_info.json").is_file():
        return "hf"
    raise DatasetError(
        [
            DatasetProblem(
                str(root),
                None,
                "no dataset found: expected <split>/annotations.jsonl or _annotations.<split>.jsonl (Roboflow), "
                "<split>/metadata.jsonl (Donut), or a dataset saved with DatasetDict.save_to_disk; "
                "splits are named train, valid/validation, test",
            )
        ],
        header=f"Cannot load {root}:",
    )


def _check_image(root: Path, folder: Path, name: object, problems: list[str]) -> Path | None:
    if not isinstance(name, str) or not name:
        problems.append(f"image must be a file name, got {name!r}")
        return None
    if Path(name).is_absolute() or name.startswith(("/", "\\")) or ".." in Path(name).parts:
        problems.append(f"image path {name!r} leaves the dataset folder; use a path relative to {folder}")
        return None
    path = folder / name
    try:
        resolved = path.resolve()
        if not resolved.is_relative_to(root.resolve()):
            problems.append(f"image path {name!r} resolves outside the dataset folder ({resolved})")
            return None
    except OSError as exc:
        problems.append(f"image path {name!r} cannot be resolved: {exc}")
        return None
    if not path.is_file():
        problems.append(f"image {name!r} does not exist in {folder}")
        return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        problems.append(f"image {name!r} cannot be read: {exc}")
        return None
    return path


def _check_pages(
    root: Path, folder: Path, names: object, first: object, problems: list[str]
) -> tuple[Path, ...]:
    """A multi-page row's ``pages``: every page's image, the first being the row's ``image``."""
    if names is None:
        return ()
    if not isinstance(names, list) or len(names) < 2:
        problems.append(f"pages must list the images of a document's pages (two or more), got {names!r}")
        return ()
    if names[0] != first:
        problems.append(f"pages must start with the row's image {first!r}, got {names[0]!r}")
        return ()
    paths = [_check_image(root, folder, name, problems) for name in names]
    return tuple(path for path in paths if path is not None)


def _check_target(target: object, schema: SchemaSpec, problems: list[str]) -> str | None:
    if isinstance(target, (dict, list)):
        target = json.dumps(target, ensure_ascii=False)
    if not isinstance(target, str):
        problems.append(f"target must be a JSON string, got {type(target).__name__}")
        return None
    try:
        value = json.loads(target)
    except json.JSONDecodeError as exc:
        problems.append(f"target is not valid JSON ({exc.msg} at column {exc.colno}): {target[:60]!r}")
        return None
    try:
        schema.validate_data(value)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:5]
        )
        more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        problems.append(f"target does not match schema {schema.name!r}: {details}{more}")
        return None
    return target


def _jsonl_rows(file: Path, problems: list[DatasetProblem]) -> Iterator[tuple[int, dict[str, Any]]]:
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(DatasetProblem(str(file), number, f"not a JSON object: {exc.msg}"))
                continue
            if not isinstance(row, dict):
                problems.append(DatasetProblem(str(file), number, "not a JSON object"))
                continue
            yield number, row


def _unwrap_donut(ground_truth: object) -> object:
    gt = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if isinstance(gt, dict) and "gt_parse" in gt:
        return gt["gt_parse"]
    if isinstance(gt, dict) and "gt_parses" in gt:
        parses = gt["gt_parses"]
        if isinstance(parses, list) and len(parses) == 1:
            return parses[0]
        raise ValueError("gt_parses must hold exactly one parse")
    raise ValueError("ground_truth must be a JSON object with a 'gt_parse' key")


def reference_text(row: Any) -> tuple[str, str | None]:
    """The target JSON text and image name of one reference row, in any row format `load` reads.

    Roboflow rows (``suffix``), Donut rows (``ground_truth`` with ``gt_parse``), loaded rows (``target``), or the
    JSON object itself (no name).

    Raises:
        ValueError: the row is not a JSON object, or its Donut ground truth is malformed.

    Examples:
        >>> reference_text({"image": "1.png", "suffix": '{"total": 3}'})
        ('{"total": 3}', '1.png')
        >>> reference_text({"file_name": "2.png", "ground_truth": '{"gt_parse": {"total": 4}}'})
        ('{"total": 4}', '2.png')
    """
    if not isinstance(row, dict):
        raise ValueError("is not a JSON object")
    name = row.get("image") or row.get("file_name") or row.get("source")
    if "suffix" in row:
        return str(row["suffix"]), name
    if "ground_truth" in row:
        return json.dumps(_unwrap_donut(row["ground_truth"]), ensure_ascii=False), name
    if "target" in row:
        target = row["target"]
        return (target if isinstance(target, str) else json.dumps(target, ensure_ascii=False)), name
    return json.dumps(row, ensure_ascii=False), None


def prediction_text(row: Any) -> tuple[str, str | None]:
    """A prediction's text and document name, from a line of model text or a row the CLI or other tools wrote.

    ``raw_text`` (our ``extract`` records), ``prediction``, an ``extract`` record's ``data``, a dataset row
    (``suffix``, ``ground_truth``, ``target``: scoring a dataset against itself gives 1.0), or the object itself.

    Examples:
        >>> prediction_text({"source": "1.png", "valid": True, "raw_text": '{"total": 3}', "data": {"total": 3}})
        ('{"total": 3}', '1.png')
    """
    if isinstance(row, str):
        return row, None
    if isinstance(row, dict):
        name = row.get("source") or row.get("image") or row.get("file_name")
        if isinstance(row.get("raw_text"), str):
            return row["raw_text"], name
        if "prediction" in row:
            pred = row["prediction"]
            return (pred if isinstance(pred, str) else json.dumps(pred, ensure_ascii=False)), name
        if "data" in row and "valid" in row:
            return json.dumps(row["data"] or {}, ensure_ascii=False), name
        if "suffix" in row or "ground_truth" in row or "target" in row:  # rows in a dataset's own format
            return reference_text(row)
    return json.dumps(row, ensure_ascii=False), None


def read_records(
    path: str | Path, schema: str | SchemaSpec, *, format: Format = "auto"
) -> tuple[dict[str, list[Record]], list[DatasetProblem]]:
    """Read and validate a Roboflow or Donut folder without building a dataset: records per split, and problems."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(
            [DatasetProblem(str(root), None, "is not a directory")], header=f"Cannot load {root}:"
        )
    spec = resolve_schema(schema)
    fmt = _detect(root) if format == "auto" else format
    if fmt not in ("roboflow", "donut"):
        raise InputError(f"read_records reads folders of JSONL files, not format {fmt!r}.")
    files = _roboflow_files(root) if fmt == "roboflow" else _donut_files(root)
    if not files:
        _detect(root)  # raises with the expected layouts
        raise DatasetError([DatasetProblem(str(root), None, f"no {fmt} annotation files found")])
    splits: dict[str, list[Record]] = {}
    problems: list[DatasetProblem] = []
    for split, (file, folder) in files.items():
        records: list[Record] = []
        for number, row in _jsonl_rows(file, problems):
            row_problems: list[str] = []
            if fmt == "roboflow":
                image_name, prefix, target = (
                    row.get("image"),
                    row.get("prefix", spec.prompt),
                    row.get("suffix"),
                )
                if target is None:
                    row_problems.append("row has no 'suffix' (the JSON target)")
            else:
                image_name, prefix = row.get("file_name"), spec.prompt
                try:
                    target = _unwrap_donut(row.get("ground_truth"))
                except (ValueError, TypeError) as exc:
                    row_problems.append(f"ground_truth: {exc}")
                    target = None
            if not isinstance(prefix, str):
                row_problems.append(f"prefix must be a string, got {prefix!r}")
            image = _check_image(root, folder, image_name, row_problems)
            pages = _check_pages(root, folder, row.get("pages"), image_name, row_problems)
            checked = _check_target(target, spec, row_problems) if target is not None else None
            problems.extend(DatasetProblem(str(file), number, p) for p in row_problems)
            if not row_problems and image is not None and checked is not None and isinstance(prefix, str):
                records.append(Record(image, prefix, checked, str(file), number, pages))
        splits[split] = records
    return splits, problems


def _report(problems: list[DatasetProblem], on_error: str, total: int) -> None:
    if not problems:
        return
    if on_error == "skip":
        rows = {(p.file, p.line) for p in problems}
        warnings.warn(
            f"Skipped {len(rows)} bad row(s) of {total + len(rows)}; first: {problems[0]}",
            InvoiceVLMWarning,
            stacklevel=3,
        )
        return
    raise DatasetError(problems)


def _load_hf(
    path: str | Path,
    spec: SchemaSpec,
    on_error: str,
    image_column: str,
    target_column: str | None,
    prefix_column: str | None,
) -> DatasetDict:
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    from invoice_vlm.backends._hf import check_hub, is_local
    from invoice_vlm.errors import ModelLoadError

    local = Path(path).expanduser()
    if not local.is_dir():
        if is_local(path):
            raise DatasetError(
                [],
                header=f"Dataset {str(path)!r} does not exist here (a local path, so the Hub was not asked); check "
                "the folder name.",
            )
        try:
            check_hub(str(path), "dataset")
        except ModelLoadError as exc:
            raise DatasetError([], header=str(exc)) from None
    loaded = load_from_disk(str(local)) if local.is_dir() else load_dataset(str(path))
    if isinstance(loaded, Dataset):
        loaded = DatasetDict({"train": loaded})
    problems: list[DatasetProblem] = []
    out: dict[str, Any] = {}
    kept_total = 0
    for split, ds in loaded.items():
        columns = set(ds.column_names)
        target_col = target_column or next(
            (c for c in ("suffix", "target", "ground_truth", "json", "label") if c in columns), None
        )
        where = f"{path}[{split}]"
        if image_column not in columns or target_col is None or target_col not in columns:
            raise DatasetError(
                [
                    DatasetProblem(
                        where,
                        None,
                        f"columns are {sorted(columns)}; name the image and JSON columns with "
                        f"image_column= and target_column= (looked for {image_column!r} and "
                        f"{target_column or 'suffix/target/ground_truth/json/label'!r})",
                    )
                ]
            )
        keep: list[int] = []
        targets: list[str] = []
        prefixes: list[str] = []
        for index, row in enumerate(ds):
            row_problems: list[str] = []
            raw = row[target_col]
            if target_col == "ground_truth":
                try:
                    raw = _unwrap_donut(raw)
                except (ValueError, TypeError) as exc:
                    row_problems.append(f"ground_truth: {exc}")
            checked = _check_target(raw, spec, row_problems) if not row_problems else None
            if row[image_column] is None:
                row_problems.append(f"column {image_column!r} is empty")
            prefix = row[prefix_column] if prefix_column else spec.prompt
            problems.extend(DatasetProblem(where, index + 1, p) for p in row_problems)
            if not row_problems and checked is not None:
                keep.append(index)
                targets.append(checked)
                prefixes.append(prefix)
        kept_total += len(keep)
        subset = ds.select(keep)
        extra = [c for c in subset.column_names if c not in (image_column,)]
        subset = subset.remove_columns(extra)
        if image_column != "image":
            subset = subset.rename_column(image_column, "image")
        subset = subset.add_column("prefix", prefixes).add_column("target", targets)
        out[split] = subset
    _report(problems, on_error, kept_total)
    return DatasetDict(out)


def load(
    path: str | Path,
    schema: str | SchemaSpec,
    format: Format = "auto",
    *,
    on_error: Literal["raise", "skip"] = "raise",
    image_column: str = "image",
    target_column: str | None = None,
    prefix_column: str | None = None,
) -> DatasetDict:
    """Load a dataset and validate every row against ``schema``.

    Args:
        path: a folder (Roboflow/maestro JSONL, Donut ``metadata.jsonl``, or a saved ``DatasetDict``) or a Hugging
            Face dataset id (needs network).
        schema: what each target must satisfy.
        format: ``"auto"`` detects it from the folder's files.
        on_error: ``"raise"`` lists every problem in one `DatasetError`; ``"skip"`` drops bad rows with a warning.
        image_column: image column of a Hugging Face dataset.
        target_column: JSON column of a Hugging Face dataset (default: the first of suffix, target, ground_truth,
            json, label).
        prefix_column: prompt column of a Hugging Face dataset (default: the schema's prompt for every row).

    Returns:
        A ``DatasetDict`` with the splits found (``train``, ``valid``/``validation``, ``test``) and columns
        ``image`` (decoded to PIL), ``prefix`` and ``target`` (the JSON string); when a row is a document of several
        pages (a Roboflow row with ``"pages": [...]``, as reviews of multi-page documents are written), also
        ``pages``: every page's image path for those rows, empty for one-page rows.

    Raises:
        DatasetError: bad rows (each named with file and line) when ``on_error="raise"``, or no dataset found.
    """
    require("Loading datasets", "data", "datasets")
    if on_error not in ("raise", "skip"):
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}.")
    spec = resolve_schema(schema)
    root = Path(path).expanduser()
    fmt = format
    if fmt == "auto":
        fmt = _detect(root) if root.is_dir() else "hf"
    if fmt == "hf":
        return _load_hf(path, spec, on_error, image_column, target_column, prefix_column)
    from datasets import Dataset, DatasetDict, Features, List, Value
    from datasets import Image as ImageFeature

    splits, problems = read_records(root, spec, format=fmt)
    _report(problems, on_error, sum(len(r) for r in splits.values()))
    columns = {"image": ImageFeature(), "prefix": Value("string"), "target": Value("string")}
    several = any(r.pages for records in splits.values() for r in records)
    if several:  # only then: datasets of one-page documents keep their three columns
        columns["pages"] = List(Value("string"))
    features = Features(columns)

    def table(records: list[Record]) -> dict[str, list[Any]]:
        data: dict[str, list[Any]] = {
            "image": [str(r.image) for r in records],
            "prefix": [r.prefix for r in records],
            "target": [r.target for r in records],
        }
        if several:
            data["pages"] = [[str(page) for page in r.pages] for r in records]
        return data

    return DatasetDict(
        {split: Dataset.from_dict(table(records), features=features) for split, records in splits.items()}
    )
