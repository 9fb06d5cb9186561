"""Extraction as an HTTP service, with a review page whose accepted corrections become training data.

``create_app(extractor, ...)`` builds a FastAPI application (extra ``serve``); ``invoice-vlm serve`` runs it with
uvicorn. Endpoints:

- ``POST /v1/extract``: a multipart upload (field ``file``: an image or a PDF) → the record ``invoice-vlm extract``
  writes, plus ``needs_review`` (field paths below ``min_confidence``, with a field error, or found nowhere on the
  page). Content is sniffed, never trusted: 413 for an upload or page too large or too many pages, 415 for a file that is no image or PDF, 422 for a
  broken one; 503 with ``Retry-After`` when the queue is full; 504 past the per-request timeout; 401 without the API
  key when one is set. The service never fetches a URL a client names.
- ``POST /v1/review``: the same file and the corrected document (field ``data``, JSON); validated against the
  schema (422 with the field errors otherwise) and added to ``review_dir`` as a Roboflow-layout dataset that
  `invoice_vlm.data.load` reads and `finetune` trains on: the image under a new name and one line appended to
  ``train/annotations.jsonl`` (every ``holdout``-th in ``test/``), never overwriting an earlier item.
- ``POST /v1/validate``: a JSON body ``{"data": {...}}``, the document as a reviewer is correcting it → ``valid``,
  ``field_errors`` and the normalised ``data``; the review page checks each correction with it as it is typed.
- ``GET /v1/schema``: the schema's fields and kinds, ``min_confidence``, and ``form``: the whole field tree (every
  field, nested object and list, with kind, JSON type, whether required, bounds and choices) that the review page
  builds its form from, so a field the model left out can still be filled.
- ``GET /v1/queue``, ``POST /v1/queue/next``, ``GET /v1/queue/{id}`` (and ``/page``), ``POST /v1/queue/{id}/skip``,
  ``POST /v1/queue/{id}/accept``: the review queue that ``invoice-vlm extract --review-dir`` fills
  (`invoice_vlm.review.ReviewQueue`): leased to one reviewer at a time, accepted once, recorded with the reviewer
  whose key (``ServeConfig.reviewers``) the request carried.
- ``GET /``: the review page; ``GET /healthz`` (the process is up), ``GET /readyz`` (the model is loaded),
  ``GET /metrics`` (Prometheus: requests, latency, documents, pages, invalid results, queue depth).

Requests are served by one worker thread that owns the model: documents waiting together (up to ``batch_size``
pages, or ``batch_wait_ms`` of waiting) go through one `InvoiceExtractor.extract_iter` call, which batches their
pages in one ``generate`` and hands each request its own results, in order, so results never mix.
"""

import asyncio
import base64
import contextlib
import hmac
import io
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.errors import DocumentError, InputError, MissingDependencyError, require
from invoice_vlm.evidence import clickable_words
from invoice_vlm.review import ANONYMOUS, ReviewConflict, ReviewQueue, review_items, write_review

if TYPE_CHECKING:
    from fastapi import FastAPI

    from invoice_vlm.extractor import InvoiceExtractor
    from invoice_vlm.schemas import SchemaSpec
    from invoice_vlm.schemas.fields import LeafField, ObjectNode

__all__ = ["ServeConfig", "create_app", "review_items", "schema_form"]

PAGE = Path(__file__).with_name("page.html")
_STATUS = {
    "unsupported": 415,
    "too_large": 413,
    "too_many_pages": 413,
    "empty": 422,
    "damaged": 422,
    "encrypted": 422,
    "too_small": 422,
    "missing": 422,
}


@dataclass
class ServeConfig:
    """Limits and options of the service."""

    review_dir: Path | None = field(default=None, metadata={"help": "Where accepted reviews are written."})
    api_key: str | None = field(default=None, metadata={"help": "Required in X-API-Key or a Bearer token."})
    max_upload_mb: float = field(default=25.0, metadata={"help": "Larger uploads get 413."})
    max_pages: int = field(default=20, metadata={"help": "Documents with more pages get 413."})
    max_pixels: int = field(default=40_000_000, metadata={"help": "Larger pages get 413, from the header."})
    queue_size: int = field(default=64, metadata={"help": "Documents waiting; beyond, 503 with Retry-After."})
    timeout_s: float = field(default=120.0, metadata={"help": "A request waiting longer gets 504."})
    batch_size: int = field(default=8, metadata={"help": "Pages per model call."})
    batch_wait_ms: float = field(default=5.0, metadata={"help": "How long a batch waits to fill."})
    min_confidence: float = field(default=0.8, metadata={"help": "Fields below it are flagged for review."})
    reviewers: dict[str, str] = field(
        default_factory=dict,
        metadata={"help": "Reviewer name -> key; each accepted document records who accepted it."},
    )
    lease_s: float = field(
        default=15 * 60.0,
        metadata={"help": "How long a queued document stays with the reviewer who opened it."},
    )
    holdout: float = field(
        default=0.2, metadata={"help": "Share of accepted documents kept in test/ to evaluate on."}
    )

    def __post_init__(self) -> None:
        keys = list(self.reviewers.values()) + ([self.api_key] if self.api_key else [])
        if any(not isinstance(key, str) or not key for key in keys):
            raise InputError("every reviewer needs a non-empty key (a string).")
        if len(set(keys)) != len(keys):
            raise InputError(
                "two reviewers (or a reviewer and --api-key-env) share a key; give each its own."
            )
        if not 0 <= self.holdout < 1:
            raise InputError(f"holdout must be a fraction in [0, 1), got {self.holdout!r}.")


@dataclass
class _Job:
    pages: list[Any]
    name: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _leaf_form(leaf: "LeafField") -> dict[str, Any]:
    return {
        "type": "leaf",
        "key": leaf.key,
        "path": leaf.path,
        "kind": leaf.kind,
        "json_type": leaf.json_type,
        "required": leaf.required,
        "many": leaf.many,
        "max_items": leaf.max_items,
        "max_length": leaf.max_length,
        "choices": [getattr(choice, "value", choice) for choice in leaf.choices],
    }


def _object_form(node: "ObjectNode") -> dict[str, Any]:
    children: dict[str, dict[str, Any]] = {leaf.key: _leaf_form(leaf) for leaf in node.fields}
    children.update({section.key: _object_form(section) for section in node.sections})
    for table in node.tables:
        children[table.key] = {
            "type": "table",
            "key": table.key,
            "path": table.path,
            "required": table.required,
            "item": {**_object_form(table), "required": True},
        }
    return {
        "type": "object",
        "key": node.key,
        "path": node.path,
        "required": node.required,
        "fields": [children[key] for key in node.order],
    }


def schema_form(spec: "SchemaSpec") -> dict[str, Any]:
    """The schema's whole field tree as plain data, for a form that shows every field whatever a model returned.

    Objects carry ``fields`` in the schema's order; a list of objects is a ``table`` with its ``item`` object; a
    leaf carries its ``kind``, ``json_type``, ``required``, ``many`` (a list of values) with ``max_items``,
    ``max_length`` and ``choices``.

    Examples:
        >>> from invoice_vlm import get_schema
        >>> form = schema_form(get_schema("invoice"))
        >>> [(f["key"], f["type"]) for f in form["fields"]][:3]
        [('invoice_number', 'leaf'), ('invoice_date', 'leaf'), ('due_date', 'leaf')]
    """
    return _object_form(spec.tree)


def _same_key(given: str, expected: str) -> bool:
    """Whether an API key matches, in time that does not depend on where the two first differ."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _reviewer(given: str, keys: dict[str, str]) -> str | None:
    """Whose key ``given`` is (``keys``: name -> key), comparing against every key, each in constant time."""
    found = None
    for name, key in keys.items():
        if _same_key(given, key):  # no early exit: the time does not tell how many keys came before
            found = name
    return found


class _Worker:
    """The one thread that runs the model: takes jobs, batches them, answers each its own results."""

    def __init__(self, extractor: "InvoiceExtractor", config: "ServeConfig", metrics: "_Metrics") -> None:
        self.extractor = extractor
        self.config = config
        self.metrics = metrics
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=config.queue_size)
        self.thread = threading.Thread(target=self._run, name="invoice-vlm-model", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            batch = [job]
            pages = len(job.pages)
            deadline = time.monotonic() + self.config.batch_wait_ms / 1000
            while pages < self.config.batch_size:
                try:
                    more = self.jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self.jobs.put(None)
                    break
                batch.append(more)
                pages += len(more.pages)
            self.metrics.queue.set(self.jobs.qsize())
            self._answer(batch)

    def _answer(self, batch: "list[_Job]") -> None:
        from invoice_vlm.inputs import OpenedPages

        documents = [OpenedPages(tuple(job.pages), job.name) for job in batch]
        try:
            outputs = list(
                self.extractor.extract_iter(documents, batch_size=self.config.batch_size, progress=False)
            )
        except Exception as exc:  # a bug in a backend: every waiting request hears of it
            for job in batch:
                _answer_job(job, exc)
            return
        for job, results in zip(batch, outputs, strict=True):
            _answer_job(job, results)

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self.jobs.put_nowait(None)


def _answer_job(job: _Job, value: Any) -> None:
    """Hand a request its results, unless its event loop has closed (the server is stopping).

    The model's thread must live on to answer the other requests.
    """
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(_settle, job.future, value)


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "invoice_vlm_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "invoice_vlm_request_seconds", "Request latency", ["endpoint"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.documents = Counter("invoice_vlm_documents", "Documents extracted", registry=self.registry)
        self.pages = Counter("invoice_vlm_pages", "Pages extracted", registry=self.registry)
        self.invalid = Counter(
            "invoice_vlm_invalid_results", "Results that did not validate", registry=self.registry
        )
        self.queue = Gauge(
            "invoice_vlm_queue_depth", "Documents waiting for the model", registry=self.registry
        )


def create_app(extractor: "InvoiceExtractor", config: "ServeConfig | None" = None) -> "FastAPI":
    """The service for ``extractor`` (see the module's description).

    Raises:
        MissingDependencyError: the ``serve`` extra (fastapi, prometheus-client) is not installed.
    """
    require("invoice-vlm serve", "serve", "fastapi", "prometheus_client", "python_multipart")
    from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from invoice_vlm.inputs import load_pages

    settings = config or ServeConfig()
    metrics = _Metrics()
    state: dict[str, Any] = {"worker": None}

    @contextlib.asynccontextmanager
    async def lifespan(app: "FastAPI") -> Any:
        state["worker"] = _Worker(extractor, settings, metrics)
        yield
        state["worker"].stop()

    app = FastAPI(title="invoice_vlm", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)

    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else None
        return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)

    keys = {**settings.reviewers, **({"api-key": settings.api_key} if settings.api_key else {})}
    reviews = (
        ReviewQueue(settings.review_dir, lease_s=settings.lease_s, holdout=settings.holdout)
        if settings.review_dir is not None
        else None
    )

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Any:
        start = time.perf_counter()
        endpoint = request.url.path
        request.state.reviewer = ANONYMOUS
        if keys and endpoint.startswith("/v1/"):
            given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            who = _reviewer(given, keys)
            if who is None:
                response: Any = error(401, "missing or wrong API key: send it as X-API-Key or a Bearer token")
                metrics.requests.labels(endpoint, "401").inc()
                return response
            request.state.reviewer = who
        response = await call_next(request)
        if endpoint.startswith("/v1/queue/"):  # one series for every item, not one per id
            endpoint = "/v1/queue/{id}"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
        return response

    async def read_upload(file: UploadFile) -> tuple[list[Any], str]:
        limit = int(settings.max_upload_mb * 2**20)
        data = await file.read(limit + 1)
        name = os.path.basename(file.filename or "upload")
        if len(data) > limit:
            raise HTTPException(413, f"{name} is larger than {settings.max_upload_mb:g} MB")
        loop = asyncio.get_running_loop()
        try:
            pages = await loop.run_in_executor(
                None,
                lambda: load_pages(data, max_pages=settings.max_pages, max_pixels=settings.max_pixels),
            )
        except DocumentError as exc:
            raise HTTPException(
                _STATUS.get(exc.reason or "", 422), str(exc).replace(f"<{len(data)} bytes>", name)
            ) from None
        except MissingDependencyError as exc:
            raise HTTPException(415, str(exc)) from None
        return [page for page, _ in pages], name

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.get("/", response_class=HTMLResponse)
    async def review_page() -> str:
        return PAGE.read_text(encoding="utf-8").replace("{{SCHEMA}}", extractor.schema.name)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        worker = state["worker"]
        if worker is None or not worker.thread.is_alive():
            return error(503, "the model is not loaded yet", retry_after=1)
        return {"status": "ready", "backend": extractor.backend_name, "schema": extractor.schema.name}

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    form = schema_form(extractor.schema)

    @app.get("/v1/schema")
    async def schema() -> dict[str, Any]:
        return {**extractor.schema.describe(), "min_confidence": settings.min_confidence, "form": form}

    @app.post("/v1/validate")
    async def validate(request: Request) -> Any:
        try:
            body = await request.json()
        except ValueError:
            return error(422, 'send JSON: {"data": {...the document...}}')
        corrected = body.get("data") if isinstance(body, dict) else None
        if not isinstance(corrected, dict):
            return error(422, 'send JSON: {"data": {...the document...}}; data must be a JSON object')
        from invoice_vlm.parsing import finish_document

        checked = finish_document(corrected, extractor.schema)
        return {
            "valid": checked.valid,
            "field_errors": checked.field_errors,
            "errors": [] if checked.valid else checked.errors,
            "data": checked.to_dict() if checked.valid else checked.partial,
        }

    @app.post("/v1/extract")
    async def extract(file: UploadFile = File(...), preview: bool = False) -> Any:  # noqa: B008
        pages, name = await read_upload(file)
        loop = asyncio.get_running_loop()
        job = _Job(pages, name, loop, loop.create_future())
        try:
            state["worker"].jobs.put_nowait(job)
        except queue.Full:
            return error(503, "the service is busy: too many documents waiting; retry shortly", retry_after=2)
        metrics.queue.set(state["worker"].jobs.qsize())
        try:
            results = await asyncio.wait_for(job.future, timeout=settings.timeout_s)
        except asyncio.TimeoutError:
            return error(504, f"no result within {settings.timeout_s:g} s; try a smaller document or later")
        records = []
        for result in results:
            record = result.to_record()
            record["needs_review"] = result.needs_review(settings.min_confidence)
            records.append(record)
            metrics.invalid.inc(0 if result.valid else 1)
        metrics.documents.inc()
        metrics.pages.inc(len(pages))
        body: dict[str, Any] = {"results": records, "pages": len(pages)}
        if preview:
            body["previews"] = [_preview(page) for page in pages]
            body["preview"] = body["previews"][0]
            body["words"] = clickable_words(results[0].words) if len(results) == 1 else []
        return body

    def corrected_target(corrected: Any, source: str) -> tuple[str | None, JSONResponse | None]:
        """The schema's JSON for a reviewer's correction, or the 422 that says which fields to fix."""
        if not isinstance(corrected, dict):
            return None, error(422, "data must be a JSON object: the corrected document")
        from invoice_vlm.parsing import finish_document

        checked = finish_document(corrected, extractor.schema, source=source)
        if not checked.valid:
            return None, error(
                422, "the corrected document does not fit the schema", field_errors=checked.field_errors
            )
        return extractor.schema.dumps(checked.to_dict()), None

    @app.post("/v1/review")
    async def review(
        request: Request,
        file: UploadFile = File(...),  # noqa: B008
        data: str = Form(...),
        original: str | None = Form(None),
    ) -> Any:
        if reviews is None:
            return error(409, "this server keeps no reviews: start it with --review-dir DIR")
        pages, name = await read_upload(file)
        if len(pages) > 1 and extractor.schema.pages != "merge":
            return error(
                422,
                f"{name} has {len(pages)} pages, and schema {extractor.schema.name} reads each page as its own "
                "document: review the pages one by one (upload each, or queue them with invoice-vlm extract "
                "--review-dir DIR)",
            )
        try:
            corrected = json.loads(data)
            answer = json.loads(original) if original else None
        except json.JSONDecodeError as exc:
            return error(422, f"data or original is not JSON: {exc.msg}")
        target, problem = corrected_target(corrected, name)
        if problem is not None or target is None:
            return problem
        saved, split = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: write_review(
                reviews.root, pages, extractor.prompt, target, reviewer=request.state.reviewer,
                original=answer, source=name, holdout=settings.holdout,
            ),
        )  # fmt: skip
        return {
            "saved": saved,
            "split": split,
            "items": len(review_items(reviews.root)),
            "target": json.loads(target),
        }

    def item_body(item: Any, reviewer: str) -> dict[str, Any]:
        return {
            "id": item.id,
            "source": item.source,
            "record": item.record,
            "words": item.words,
            "accepted": item.accepted,
            "pages": [f"/v1/queue/{item.id}/page?number={number}" for number in range(item.pages)],
            "progress": reviews.progress(reviewer) if reviews else None,
        }

    async def off_loop(function: Any, *args: Any) -> Any:
        """Run a blocking queue step (file locks, disk) beside the event loop; conflicts become 409."""
        try:
            return await asyncio.get_running_loop().run_in_executor(None, function, *args)
        except ReviewConflict as exc:
            raise HTTPException(409, str(exc)) from None

    def need_queue() -> ReviewQueue:
        if reviews is None:
            raise HTTPException(409, "this server keeps no reviews: start it with --review-dir DIR")
        return reviews

    @app.get("/v1/queue")
    async def queue_progress(request: Request) -> Any:
        queue = need_queue()
        who = request.state.reviewer
        return {"reviewer": who, **(await off_loop(queue.progress, who))}

    @app.post("/v1/queue/next")
    async def queue_next(request: Request, after: str | None = None) -> Any:
        queue = need_queue()
        who = request.state.reviewer
        item = await off_loop(lambda: queue.next(who, after=after))
        if item is None:
            return {"item": None, "progress": queue.progress(who)}
        return {"item": item_body(item, who)}

    @app.get("/v1/queue/{item_id}")
    async def queue_open(request: Request, item_id: str) -> Any:
        queue = need_queue()
        who = request.state.reviewer
        return {"item": item_body(await off_loop(queue.open, item_id, who), who)}

    @app.get("/v1/queue/{item_id}/page")
    async def queue_page(item_id: str, number: int = 0) -> Any:
        from fastapi.responses import FileResponse

        item = await off_loop(need_queue().get, item_id)
        return FileResponse(await off_loop(item.page_path, need_queue().root, number), media_type="image/png")

    @app.post("/v1/queue/{item_id}/skip")
    async def queue_skip(request: Request, item_id: str) -> Any:
        queue = need_queue()
        await off_loop(queue.skip, item_id, request.state.reviewer)
        return {"skipped": item_id, "progress": queue.progress(request.state.reviewer)}

    @app.post("/v1/queue/{item_id}/accept")
    async def queue_accept(request: Request, item_id: str) -> Any:
        queue = need_queue()
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "data" not in body:
            return error(422, 'send JSON: {"data": {...the corrected document...}}')
        target, problem = corrected_target(body["data"], item_id)
        if problem is not None or target is None:
            return problem
        saved = await off_loop(queue.accept, item_id, request.state.reviewer, target)
        return {**saved, "target": json.loads(target), "progress": queue.progress(request.state.reviewer)}

    return app


def _preview(page: Any, width: int = 900) -> str:
    """The first page as a PNG data URL, at most ``width`` pixels wide, for the review page."""
    image = page.copy()
    image.thumbnail((width, width * 4))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
