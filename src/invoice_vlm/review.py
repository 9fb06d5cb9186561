"""A folder of reviews: the queue of documents that need a person, and the dataset their accepted corrections form.

``invoice-vlm extract FILES --review-dir reviews/`` puts each document that needs a person (it failed the schema, a
field is below ``--min-confidence``, or a value is printed nowhere on the page) in ``reviews/queue/``, most uncertain
first; ``invoice-vlm serve --review-dir reviews/`` walks that queue. Layout::

    reviews/queue/<id>/item.json          the model's record, the prompt, the page words, the order key, skips
    reviews/queue/<id>/page-0.png ...     the pages
    reviews/queue/<id>/lease.json         who has it open, until when (a lease; another reviewer never gets it)
    reviews/done/<id>/                    the item once accepted (kept for the audit)
    reviews/train/annotations.jsonl       the dataset: {"image", "prefix", "suffix", "reviewer", "accepted_at",
    reviews/test/annotations.jsonl          "original", "source", "queue_id"} and "pages" (every page's image) for a
                                          multi-page document; every ``holdout``-th document in test/

Every change happens under one file lock (``reviews/.lock``), so several servers (and reviewers) can share a folder:
a document is leased to one reviewer at a time, an accepted document is written once (a second accept of it is
refused, not duplicated), and every file is written to a temporary name and then renamed, so a crash leaves either
the old file or the new one. The queue lives in the folder, so a restarted server finds it as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import io
import json
import math
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invoice_vlm.errors import InputError

__all__ = [
    "ReviewConflict",
    "ReviewItem",
    "ReviewQueue",
    "drop_reviewer",
    "needs_person",
    "review_items",
    "write_review",
]

LEASE_S = 15 * 60
ANONYMOUS = "anonymous"
_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{10}")  # what add() names an item: nothing else reaches the folder


class ReviewConflict(InputError):
    """The document is open with another reviewer, already accepted, or no longer in the queue."""


@dataclass(frozen=True)
class ReviewItem:
    """One queued document.

    Its id, file name, the model's record, its number of pages, the words printed on them, the prompt it was read
    with, when it was queued, and its acceptance (reviewer, time, image, split) once accepted.
    """

    id: str
    source: str
    record: dict[str, Any]
    pages: int
    words: list[dict[str, Any]]
    prompt: str
    queued_at: str
    accepted: dict[str, Any] | None = None

    def page_path(self, root: Path, number: int = 0) -> Path:
        """Where page ``number`` (from 0) lies in the review folder ``root``."""
        if not 0 <= number < self.pages:
            raise ReviewConflict(f"{self.source} has {self.pages} page(s); there is no page {number + 1}.")
        return root / ("done" if self.accepted else "queue") / self.id / f"page-{number}.png"


def needs_person(record: dict[str, Any]) -> bool:
    """Whether a record (with ``needs_review``) needs a person: not valid, or any field flagged."""
    return not record.get("valid") or bool(record.get("needs_review"))


def _order_key(record: dict[str, Any]) -> list[float]:
    """Most uncertain first: invalid, then more values printed nowhere, then lower least confidence, more flags."""
    nowhere = sum(1 for where in (record.get("evidence") or {}).values() if not where.get("found"))
    confidence = list((record.get("confidence") or {}).values())
    return [
        0.0 if record.get("valid") else -1.0,
        -float(nowhere),
        min(confidence) if confidence else 0.0,
        -float(len(record.get("needs_review") or [])),
    ]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name beside ``path``, flush to disk, then rename over it."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with temporary.open("xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _write_json(path: Path, value: Any) -> None:
    _write_atomic(path, (json.dumps(value, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))


def _png(page: Any) -> bytes:
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    return buffer.getvalue()


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One change at a time in ``root``, across threads and processes."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def review_items(review_dir: str | Path) -> list[dict[str, Any]]:
    """The accepted reviews in ``review_dir``, one row per item (``image``, ``prefix``, ``suffix``, audit columns)."""
    rows: list[dict[str, Any]] = []
    for split in ("train", "test"):
        path = Path(review_dir) / split / "annotations.jsonl"
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            rows.extend({**json.loads(line), "split": split} for line in text.splitlines() if line.strip())
    return rows


def write_review(
    review_dir: str | Path,
    pages: Sequence[Any],
    prompt: str,
    target: str,
    *,
    reviewer: str = ANONYMOUS,
    original: dict[str, Any] | None = None,
    source: str | None = None,
    holdout: float = 0.0,
    queue_id: str | None = None,
) -> tuple[str, str]:
    """Add one reviewed document (its pages, PIL images) to the dataset; returns its first image's name and the split.

    Each image is written under a fresh name (never replacing a file), then one line is appended, under the folder's
    lock. Every ``1 / holdout``-th accepted document goes to ``test/`` (held out for `invoice-vlm evaluate`). A
    multi-page document's line lists every page's image in ``pages``.
    """
    root = Path(review_dir)
    with _locked(root):
        return _write_review(root, pages, prompt, target, reviewer, original, source, holdout, queue_id)


def _write_image(folder: Path, page: Any) -> str:
    """One page under a fresh name: written to a temporary file, then linked into place (never replacing a file)."""
    data = _png(page)
    name = f"review_{time.strftime('%Y%m%d-%H%M%S')}_{hashlib.sha256(data).hexdigest()[:12]}_{uuid.uuid4().hex[:6]}.png"
    temporary = folder / f".{name}.tmp"
    with temporary.open("xb") as handle:  # "x": never overwrite an earlier item
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.link(temporary, folder / name)  # fails rather than replace an existing file
    temporary.unlink()
    return name


def _write_review(
    root: Path,
    pages: Sequence[Any],
    prompt: str,
    target: str,
    reviewer: str,
    original: dict[str, Any] | None,
    source: str | None,
    holdout: float,
    queue_id: str | None,
) -> tuple[str, str]:
    count = len(review_items(root)) + 1
    split = "test" if math.floor(count * holdout) > math.floor((count - 1) * holdout) else "train"
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    names = [_write_image(folder, page) for page in pages]
    name = names[0]
    row: dict[str, Any] = {
        "image": name,
        "prefix": prompt,
        "suffix": target,
        "reviewer": reviewer,
        "accepted_at": _now(),
        "original": original,
        "source": source,
        "queue_id": queue_id,
    }
    if len(names) > 1:
        row["pages"] = names
    with (folder / "annotations.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return name, split


def drop_reviewer(review_dir: str | Path, reviewer: str) -> int:
    """Remove one reviewer's accepted documents from the dataset; returns how many.

    Their rows and images move to ``removed/<split>/`` (nothing is deleted), the rest of the dataset stays as it was.
    """
    root = Path(review_dir)
    dropped = 0
    with _locked(root):
        for split in ("train", "test"):
            path = root / split / "annotations.jsonl"
            if not path.is_file():
                continue
            keep: list[str] = []
            gone: list[str] = []
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    (gone if json.loads(line).get("reviewer") == reviewer else keep).append(line)
            if not gone:
                continue
            removed = root / "removed" / split
            removed.mkdir(parents=True, exist_ok=True)
            with (removed / "annotations.jsonl").open("a", encoding="utf-8") as handle:
                handle.write("".join(line + "\n" for line in gone))
                handle.flush()
                os.fsync(handle.fileno())
            _write_atomic(path, "".join(line + "\n" for line in keep).encode("utf-8"))
            for line in gone:
                row = json.loads(line)
                for name in row.get("pages") or [row["image"]]:
                    image = root / split / name
                    if image.is_file():
                        os.replace(image, removed / image.name)
            dropped += len(gone)
    return dropped


class ReviewQueue:
    """The review folder's queue (see the module's description). Safe to share between threads and processes."""

    def __init__(self, root: str | Path, *, lease_s: float = LEASE_S, holdout: float = 0.0) -> None:
        if not 0.0 <= holdout < 1.0:
            raise InputError(f"holdout must be a fraction in [0, 1), got {holdout!r}.")
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise InputError(f"review folder {self.root} is a file; give a folder.")
        self.lease_s = lease_s
        self.holdout = holdout
        self._sources: set[str] | None = None  # what add_results has seen in the folder

    # --- filling the queue --------------------------------------------------------------------------------------

    def add(
        self,
        pages: Sequence[Any],
        record: dict[str, Any],
        *,
        prompt: str,
        words: Sequence[dict[str, Any]] = (),
    ) -> str:
        """Queue one document; returns its id.

        ``pages``: its pages (PIL images) that ``record`` was read from; ``record``: the model's record (with
        ``needs_review``); ``prompt``: what the model read it with; ``words``: the words printed on the pages
        (``{"text", "page", "box"}``, box in 0-1 page coordinates).
        """
        if not pages:
            raise InputError(f"{record.get('source')!r}: a document to review needs at least one page.")
        item_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:10]}"
        staging = self.root / "queue" / f".{item_id}.tmp"
        staging.mkdir(parents=True)
        for number, page in enumerate(pages):
            _write_atomic(staging / f"page-{number}.png", _png(page))
        item = {
            "id": item_id,
            "source": record.get("source") or item_id,
            "record": record,
            "pages": len(pages),
            "words": list(words),
            "prompt": prompt,
            "queued_at": _now(),
            "order": _order_key(record),
            "skipped_by": [],
        }
        _write_json(staging / "item.json", item)
        os.rename(staging, self.root / "queue" / item_id)  # the item appears whole or not at all
        return item_id

    def add_results(
        self, document: Any, results: Sequence[Any], *, prompt: str, min_confidence: float
    ) -> tuple[int, int]:
        """Queue the results of one extracted document that need a person; returns (queued, already in the folder).

        ``results``: what `InvoiceExtractor.extract_iter` gave for ``document``: one per page (each page is queued on
        its own), or one for the whole document (queued with all its pages). A result whose source (file name, and
        page) is waiting in the queue or was accepted already is not queued again, so a batch run twice queues once.
        """
        if self._sources is None:
            self._sources = {item["source"] for folder in ("queue", "done") for item in self._items(folder)}
        flagged = [
            (number, result)
            for number, result in enumerate(results)
            if not result.unreadable and (not result.valid or result.needs_review(min_confidence))
        ]
        fresh = [(number, result) for number, result in flagged if result.source not in self._sources]
        if not fresh:
            return 0, len(flagged)
        from invoice_vlm.evidence import clickable_words
        from invoice_vlm.inputs import load_pages

        pages = [page for page, _ in load_pages(document)]
        whole = len(results) == 1
        for number, result in fresh:
            record = {**result.to_record(), "needs_review": result.needs_review(min_confidence)}
            words = clickable_words(result.words)
            self.add(pages if whole else [pages[number]], record, prompt=prompt, words=words)
            self._sources.add(str(result.source))
        return len(fresh), len(flagged) - len(fresh)

    # --- reading -------------------------------------------------------------------------------------------------

    def _items(self, folder: str = "queue") -> list[dict[str, Any]]:
        base = self.root / folder
        if not base.is_dir():
            return []
        items = []
        for entry in base.iterdir():
            if entry.name.startswith(".") or not (entry / "item.json").is_file():
                continue
            items.append(json.loads((entry / "item.json").read_text(encoding="utf-8")))
        return items

    def _ordered(self) -> list[dict[str, Any]]:
        """Waiting items, most uncertain first (queue order breaks ties)."""
        return sorted(self._items(), key=lambda item: (item["order"], item["queued_at"], item["id"]))

    def _lease(self, item_id: str) -> dict[str, Any] | None:
        """The live lease on an item, or ``None`` when it is free (never leased, released or expired)."""
        path = self.root / "queue" / item_id / "lease.json"
        try:
            lease: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return lease if lease.get("until", 0) > time.time() else None

    def progress(self, reviewer: str | None = None) -> dict[str, int]:
        """``left`` waiting (not accepted), ``accepted``, ``total`` ever queued, ``skipped`` by ``reviewer``."""
        waiting = self._items()
        accepted = len(self._items("done"))
        skipped = sum(1 for item in waiting if reviewer in item.get("skipped_by", []))
        return {
            "left": len(waiting),
            "accepted": accepted,
            "total": len(waiting) + accepted,
            "skipped": skipped,
        }

    def _checked(self, item_id: str) -> str:
        if not isinstance(item_id, str) or not _ID.fullmatch(item_id):
            raise ReviewConflict(f"no review item {item_id!r} in {self.root}: not an id this queue gives.")
        return item_id

    def get(self, item_id: str) -> ReviewItem:
        """The item, waiting or accepted; `ReviewConflict` when there is none with that id."""
        self._checked(item_id)
        for folder in ("queue", "done"):
            path = self.root / folder / item_id / "item.json"
            if path.is_file():
                item = json.loads(path.read_text(encoding="utf-8"))
                return ReviewItem(
                    item["id"],
                    item["source"],
                    item["record"],
                    item["pages"],
                    item["words"],
                    item["prompt"],
                    item["queued_at"],
                    item.get("accepted"),
                )
        raise ReviewConflict(f"no review item {item_id!r} in {self.root}: it may have been removed.")

    def order(self) -> list[str]:
        """Ids of the waiting items, most uncertain first."""
        return [item["id"] for item in self._ordered()]

    # --- reviewing -----------------------------------------------------------------------------------------------

    def _hold(self, item_id: str, reviewer: str) -> None:
        _write_json(
            self.root / "queue" / item_id / "lease.json",
            {"reviewer": reviewer, "until": time.time() + self.lease_s, "since": _now()},
        )

    def next(self, reviewer: str, *, after: str | None = None) -> ReviewItem | None:
        """Lease the most uncertain waiting document to ``reviewer`` and return it; ``None`` when none is left.

        Documents leased to someone else are passed over, and so are those ``reviewer`` skipped (they come back only
        when nothing else is left). ``after``: a document ``reviewer`` is leaving without accepting it: its lease is
        released, and the documents after it in the order come first (it comes last).
        """
        if after is not None:
            self._checked(after)
        with _locked(self.root):
            items = self._ordered()
            if after is not None:
                self._release(after, reviewer)
                ids = [item["id"] for item in items]
                if after in ids:
                    cut = ids.index(after)
                    items = items[cut + 1 :] + items[:cut] + [items[cut]]
            for skipped_ok in (False, True):
                for item in items:
                    lease = self._lease(item["id"])
                    if lease is not None and lease["reviewer"] != reviewer:
                        continue
                    if not skipped_ok and reviewer in item.get("skipped_by", []):
                        continue
                    self._hold(item["id"], reviewer)
                    return self.get(item["id"])
        return None

    def open(self, item_id: str, reviewer: str) -> ReviewItem:
        """Open one document (going back to an earlier one): leased to ``reviewer`` when it is still waiting.

        Raises:
            ReviewConflict: another reviewer holds it, or there is no such item.
        """
        with _locked(self.root):
            item = self.get(item_id)
            if item.accepted is None:
                lease = self._lease(item_id)
                if lease is not None and lease["reviewer"] != reviewer:
                    raise ReviewConflict(
                        f"{item.source} is open with {lease['reviewer']}; take another document."
                    )
                self._hold(item_id, reviewer)
            return item

    def _release(self, item_id: str, reviewer: str) -> None:
        lease = self._lease(item_id)
        if lease is not None and lease["reviewer"] == reviewer:
            with contextlib.suppress(FileNotFoundError):
                (self.root / "queue" / item_id / "lease.json").unlink()

    def skip(self, item_id: str, reviewer: str) -> None:
        """Put a document aside for ``reviewer`` (others still get it) and release it."""
        self._checked(item_id)
        with _locked(self.root):
            path = self.root / "queue" / item_id / "item.json"
            if not path.is_file():
                raise ReviewConflict(f"no waiting review item {item_id!r}: it was accepted or removed.")
            item = json.loads(path.read_text(encoding="utf-8"))
            if reviewer not in item["skipped_by"]:
                item["skipped_by"].append(reviewer)
                _write_json(path, item)
            self._release(item_id, reviewer)

    def accept(self, item_id: str, reviewer: str, target: str) -> dict[str, Any]:
        """Add a document's correction (``target``: the schema's JSON) to the dataset, once; returns its row.

        The row records who accepted it, when, and the model's original answer.

        Raises:
            ReviewConflict: another reviewer holds the document, or it was already accepted (by anyone).
        """
        self._checked(item_id)
        with _locked(self.root):
            folder = self.root / "queue" / item_id
            if not (folder / "item.json").is_file():
                done = self.root / "done" / item_id / "item.json"
                if done.is_file():
                    by = json.loads(done.read_text(encoding="utf-8")).get("accepted", {}).get("reviewer")
                    raise ReviewConflict(f"review item {item_id!r} was already accepted by {by}.")
                raise ReviewConflict(f"no waiting review item {item_id!r}: it was removed.")
            lease = self._lease(item_id)
            if lease is not None and lease["reviewer"] != reviewer:
                raise ReviewConflict(f"review item {item_id!r} is open with {lease['reviewer']}.")
            item = json.loads((folder / "item.json").read_text(encoding="utf-8"))
            written = [row for row in review_items(self.root) if row.get("queue_id") == item_id]
            if (
                written
            ):  # a crash came between the dataset's line and the move below: finish, never write twice
                name, split = written[0]["image"], written[0]["split"]
                item["accepted"] = {"reviewer": written[0]["reviewer"], "at": written[0]["accepted_at"]}
            else:
                from PIL import Image

                pages = []
                for number in range(item["pages"]):
                    with Image.open(folder / f"page-{number}.png") as opened:
                        pages.append(opened.convert("RGB"))
                record = item["record"]
                original = record.get("data") if record.get("valid") else record.get("partial")
                name, split = _write_review(
                    self.root, pages, item["prompt"], target, reviewer, original, item["source"], self.holdout,
                    item_id,
                )  # fmt: skip
                item["accepted"] = {"reviewer": reviewer, "at": _now()}
            item["accepted"].update(image=name, split=split)
            _write_json(folder / "item.json", item)
            with contextlib.suppress(FileNotFoundError):
                (folder / "lease.json").unlink()
            (self.root / "done").mkdir(exist_ok=True)
            os.rename(folder, self.root / "done" / item_id)
            return {"image": name, "split": split, **item["accepted"]}
