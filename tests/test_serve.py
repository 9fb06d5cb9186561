"""The HTTP service: its API through FastAPI's httpx test client, limits, batching, reviews, and the review page in a
real browser."""

from __future__ import annotations

import datetime
import io
import json
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from PIL import Image
from pydantic import BaseModel, Field

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")

from fastapi.testclient import TestClient

from invoice_vlm import Generation, InvoiceExtractor
from invoice_vlm.serve import ServeConfig, create_app, review_items
from invoice_vlm.testing import FakeBackend

from .conftest import PALLET_LABEL

LABEL = PALLET_LABEL


def png(width: int = 80, height: int = 60, color: str = "white") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def unsure_label(image, request):
    """The label, with the model unsure of the shipment id's characters."""
    text = json.dumps(LABEL)
    start = text.index("P248")
    scores = tuple(0.3 if start <= i < start + 12 else 0.99 for i in range(len(text)))
    return Generation(text, scores)


@pytest.fixture
def client(tmp_path):
    # Blank uploads: every value would be "printed nowhere"; these tests are about the API, not evidence.
    extractor = InvoiceExtractor(FakeBackend(unsure_label), "pallet_label", evidence=False)
    app = create_app(extractor, ServeConfig(review_dir=tmp_path / "reviews", max_upload_mb=1, max_pages=5))
    with TestClient(app) as test_client:
        yield test_client


def test_extract_health_ready_and_metrics(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    response = client.post("/v1/extract", files={"file": ("label.png", png(), "image/png")})
    assert response.status_code == 200
    record = response.json()["results"][0]
    assert record["valid"] and record["data"]["shipment_id"] == "P24812736099"
    assert record["needs_review"] == ["shipment_id"] and record["confidence"]["shipment_id"] == pytest.approx(
        0.3
    )
    assert record["source"] == "label.png"
    metrics = client.get("/metrics").text
    assert "invoice_vlm_documents_total 1.0" in metrics and "invoice_vlm_request_seconds_bucket" in metrics
    assert 'invoice_vlm_requests_total{endpoint="/v1/extract",status="200"} 1.0' in metrics


def _many_pages_pdf(pages: int) -> bytes:
    buffer = io.BytesIO()
    first = Image.new("RGB", (20, 20), "white")
    first.save(buffer, format="PDF", save_all=True, append_images=[Image.new("RGB", (20, 20))] * (pages - 1))
    return buffer.getvalue()


def _bomb() -> bytes:
    from .test_inputs import _png_claiming

    return _png_claiming(40000, 40000)


@pytest.mark.parametrize(
    ("name", "make", "status", "words"),
    [
        ("empty.png", lambda: b"", 422, "is empty"),
        ("big.png", lambda: b"\0" * (2 * 2**20), 413, "larger than 1 MB"),
        ("notes.png", lambda: b"these are my notes, not a scan", 415, "is not a PNG, JPEG"),
        ("cut.png", lambda: png(400, 400, "red")[:300] + b"\0" * 10, 422, "damaged or truncated"),
        ("bomb.png", _bomb, 413, "far too large"),
        ("long.pdf", lambda: _many_pages_pdf(500), 413, "more than max_pages=5"),
    ],
)
def test_bad_uploads_get_4xx_json_and_the_server_keeps_serving(client, name, make, status, words):
    pytest.importorskip("pypdfium2")
    response = client.post("/v1/extract", files={"file": (name, make(), "application/octet-stream")})
    assert (
        response.status_code == status
        and words in response.json()["error"]
        and name in response.json()["error"]
    )
    assert client.post("/v1/extract", files={"file": ("ok.png", png(), "image/png")}).status_code == 200


def test_sixty_megabytes_are_refused_at_the_default_limit():
    app = create_app(InvoiceExtractor(FakeBackend(unsure_label), "pallet_label"))
    with TestClient(app) as client:
        response = client.post(
            "/v1/extract", files={"file": ("scan.tif", b"\0" * (60 * 2**20), "image/tiff")}
        )
        assert response.status_code == 413 and "larger than 25 MB" in response.json()["error"]
        assert client.post("/v1/extract", files={"file": ("ok.png", png(), "image/png")}).status_code == 200


def test_api_key(tmp_path):
    app = create_app(
        InvoiceExtractor(FakeBackend(unsure_label), "pallet_label"), ServeConfig(api_key="s3cret")
    )
    with TestClient(app) as client:
        files = {"file": ("label.png", png(), "image/png")}
        assert client.post("/v1/extract", files=files).status_code == 401
        assert client.post("/v1/extract", files=files, headers={"X-API-Key": "s3cret"}).status_code == 200
        assert (
            client.post("/v1/extract", files=files, headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        assert client.get("/healthz").status_code == 200  # probes need no key


def test_full_queue_is_503_with_retry_after_and_slow_requests_504():
    release = threading.Event()

    def blocked(image, request):
        release.wait(10)
        return json.dumps(LABEL)

    app = create_app(
        InvoiceExtractor(FakeBackend(blocked), "pallet_label"),
        ServeConfig(queue_size=1, timeout_s=0.5, batch_size=1, batch_wait_ms=0),
    )
    with TestClient(app) as client:
        statuses: list[int] = []

        def call():
            statuses.append(
                client.post("/v1/extract", files={"file": ("l.png", png(), "image/png")}).status_code
            )

        first = threading.Thread(target=call)
        first.start()
        time.sleep(0.3)  # the worker holds the first document; the next fills the queue
        second = threading.Thread(target=call)
        second.start()
        time.sleep(0.1)
        third = client.post("/v1/extract", files={"file": ("l.png", png(), "image/png")})
        assert third.status_code == 503 and third.headers["Retry-After"] == "2"
        first.join()
        second.join()
        release.set()
        assert statuses.count(504) >= 1  # waited past the 0.5 s timeout


def test_concurrent_requests_share_batches_and_never_mix():
    sizes: list[int] = []

    class Echo:
        """Answers each page with its own width, and records how many pages each model call saw."""

        def generate(self, images, request):
            sizes.append(len(images))
            time.sleep(0.05)
            return [Generation(json.dumps({**LABEL, "route": f"W{image.width}"})) for image in images]

    app = create_app(InvoiceExtractor(Echo(), "pallet_label"), ServeConfig(batch_size=8, batch_wait_ms=30))
    with TestClient(app) as client:
        answers: dict[int, str] = {}

        def call(width):
            files = {"file": (f"{width}.png", png(width), "image/png")}
            answers[width] = client.post("/v1/extract", files=files).json()["results"][0]["data"]["route"]

        threads = [threading.Thread(target=call, args=(60 + i,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert answers == {60 + i: f"W{60 + i}" for i in range(12)}  # every request got its own document's result
    assert max(sizes) > 1  # and requests waiting together went through one model call


def test_reviews_become_a_dataset(client, tmp_path):
    pytest.importorskip("datasets")
    from invoice_vlm.data import load

    fixed = {**LABEL, "shipment_id": "P24812736098"}
    files = {"file": ("label.png", png(), "image/png")}
    response = client.post("/v1/review", files=files, data={"data": json.dumps(fixed)})
    assert response.status_code == 200, response.text
    again = client.post("/v1/review", files=files, data={"data": json.dumps(fixed)})
    assert again.json()["saved"] != response.json()["saved"] and again.json()["items"] == 2
    bad = client.post("/v1/review", files=files, data={"data": json.dumps({**LABEL, "products": "none"})})
    assert bad.status_code == 422 and "products" in bad.json()["field_errors"]
    rows = load(tmp_path / "reviews", schema="pallet_label")["train"]
    assert len(rows) == 2 and json.loads(rows[0]["target"])["shipment_id"] == "P24812736098"
    assert len(review_items(tmp_path / "reviews")) == 2


def test_import_invoice_vlm_loads_no_web_framework():
    import subprocess

    code = "import sys, invoice_vlm; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


# --- a real server on loopback: the review page in Chromium, and a bounded load ----------------------------------------


@pytest.fixture
def live_server(tmp_path):
    import socket

    import uvicorn

    def start(extractor, config):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(extractor, config), port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    servers: list = []
    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)


def _chromium() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
def test_review_page_in_a_real_browser(live_server, tmp_path):
    pytest.importorskip("datasets")
    playwright = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("needs the system's Chromium (.ci/run installs it)")
    from invoice_vlm.data import load

    reviews = tmp_path / "reviews"
    url = live_server(
        InvoiceExtractor(FakeBackend(unsure_label), "pallet_label"), ServeConfig(review_dir=reviews)
    )
    upload = tmp_path / "label.png"
    upload.write_bytes(png(320, 200))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.set_input_files("#file", str(upload))
        page.click("#extract")
        field = page.locator('input[data-path="shipment_id"]')
        field.wait_for(timeout=15000)
        assert "review" in (page.locator(".row", has=field).get_attribute("class") or "")  # highlighted
        field.fill("P24812736098")
        page.click("#accept")
        page.wait_for_selector("text=Saved as", timeout=15000)
        if "INVOICE_VLM_SCREENSHOT" in __import__("os").environ:
            page.screenshot(path=__import__("os").environ["INVOICE_VLM_SCREENSHOT"], full_page=True)
        browser.close()
    rows = load(reviews, schema="pallet_label")["train"]
    assert [json.loads(t)["shipment_id"] for t in rows["target"]] == ["P24812736098"]


# A delivery note schema of a user's own: a nested optional object, a list of values, a list of objects, a date.
class Party(BaseModel):
    name: str
    address: str | None = None


class NoteLine(BaseModel):
    description: str
    amount: Decimal


class DeliveryNote(BaseModel):
    note_number: str
    delivered_on: datetime.date
    carrier: Party | None = None
    lots: list[str] = Field(default_factory=list, max_length=3)
    lines: list[NoteLine]


NOTE = DeliveryNote.model_json_schema()


def half_read_note(image, request):
    """A note as a model half read it: the date and one amount left out, no carrier, a junk row; unsure of the number."""
    text = json.dumps(
        {
            "note_number": "DN-7781",
            "carrier": None,
            "lots": ["L1"],
            "lines": [{"description": "Pallet wrap"}, {"description": "junk row", "amount": "3.10"}],
        }
    )
    start = text.index("DN-7781")
    scores = tuple(0.9699 if start <= i < start + 7 else 0.9716 for i in range(len(text)))
    return Generation(text, scores)


@pytest.fixture
def note_extractor():
    from invoice_vlm import SchemaSpec

    spec = SchemaSpec(
        name="delivery_note_test", model=DeliveryNote, prompt="extract delivery note in JSON format"
    )
    return InvoiceExtractor(FakeBackend(half_read_note), spec)


def test_the_form_is_the_schema_and_corrections_are_checked_as_typed(note_extractor, tmp_path):
    app = create_app(note_extractor, ServeConfig(review_dir=tmp_path / "reviews", api_key="s3cret"))
    with TestClient(app) as http:
        key = {"X-API-Key": "s3cret"}
        described = http.get("/v1/schema", headers=key).json()
        form = described["form"]
        assert [f["key"] for f in form["fields"]] == [
            "note_number",
            "delivered_on",
            "carrier",
            "lots",
            "lines",
        ]
        kinds = {f["key"]: f for f in form["fields"]}
        assert kinds["carrier"]["type"] == "object" and not kinds["carrier"]["required"]
        assert [f["path"] for f in kinds["carrier"]["fields"]] == ["carrier.name", "carrier.address"]
        assert kinds["lots"]["many"] and kinds["lots"]["max_items"] == 3
        assert kinds["lines"]["type"] == "table" and kinds["lines"]["item"]["fields"][1]["kind"] == "decimal"
        assert kinds["delivered_on"]["kind"] == "date" and kinds["delivered_on"]["required"]
        assert http.post("/v1/validate", json={"data": {}}).status_code == 401  # the key guards it too
        half = {"note_number": "DN-7781", "lines": [{"description": "Pallet wrap"}]}
        checked = http.post("/v1/validate", json={"data": half}, headers=key).json()
        assert not checked["valid"]
        assert set(checked["field_errors"]) == {"delivered_on", "lines[0].amount"}
        whole = {
            **half,
            "delivered_on": "30.11.2026",
            "lines": [{"description": "Pallet wrap", "amount": "12,50"}],
        }
        checked = http.post("/v1/validate", json={"data": whole}, headers=key).json()
        assert checked["valid"] and checked["data"]["delivered_on"] == "2026-11-30"
        assert http.post("/v1/validate", json=[1], headers=key).status_code == 422


def test_api_keys_are_compared_in_constant_time(monkeypatch):
    import hmac

    from invoice_vlm import serve

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(serve.hmac, "compare_digest", lambda a, b: calls.append((a, b)) or real(a, b))
    assert serve._same_key("abc", "abc") and not serve._same_key("abd", "abc")
    assert calls == [(b"abc", b"abc"), (b"abd", b"abc")]


@pytest.mark.slow
def test_a_half_read_document_is_fully_correctable_in_the_browser(live_server, note_extractor, tmp_path):
    pytest.importorskip("datasets")
    playwright = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("needs the system's Chromium (.ci/run installs it)")
    from invoice_vlm.data import load

    reviews = tmp_path / "reviews"
    url = live_server(note_extractor, ServeConfig(review_dir=reviews, min_confidence=0.97))
    upload = tmp_path / "note.png"
    upload.write_bytes(png(320, 200))

    def row(page, path):
        return page.locator(f'.row[data-path="{path}"]')

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.set_input_files("#file", str(upload))
        page.click("#extract")
        row(page, "note_number").wait_for(timeout=15000)
        # Every field of the schema is there, the ones the model left out marked; confidence never rounds up.
        assert "missing" in row(page, "delivered_on").get_attribute("class")
        assert "missing" in row(page, "lines[0].amount").get_attribute("class")
        assert row(page, "note_number").locator(".conf").inner_text().startswith("0.969")
        assert "review" in row(page, "note_number").get_attribute("class")
        assert row(page, "lots[0]").locator(".conf").inner_text() == "0.971"
        # A wrong value is refused beside its field as it is typed.
        row(page, "delivered_on").locator("input").fill("next tuesday")
        page.wait_for_function(
            "document.querySelector('.row[data-path=\"delivered_on\"] .problem').textContent !== ''"
        )
        row(page, "delivered_on").locator("input").fill("30.11.2026")
        row(page, "lines[0].amount").locator("input").fill("12,50")
        page.locator('fieldset[data-path="lines[1]"]').get_by_role("button", name="Remove row").click()
        page.get_by_role("button", name="Add carrier").click()
        row(page, "carrier.name").locator("input").fill("Norder Logistics Ltd")
        page.locator('fieldset[data-path="lots"]').get_by_role("button", name="Add value").click()
        row(page, "lots[1]").locator("input").fill("L2")
        page.locator('fieldset[data-path="lines"]').get_by_role("button", name="Add row", exact=True).click()
        row(page, "lines[1].description").locator("input").fill("Strapping")
        row(page, "lines[1].amount").locator("input").fill("4.50")
        page.wait_for_selector("#status.ok >> text=Valid", timeout=15000)
        page.click("#accept")
        page.wait_for_selector("text=Saved as", timeout=15000)
        if "INVOICE_VLM_FORM_SCREENSHOT" in __import__("os").environ:
            page.screenshot(path=__import__("os").environ["INVOICE_VLM_FORM_SCREENSHOT"], full_page=True)
        browser.close()
    rows = load(reviews, schema=note_extractor.schema)["train"]
    assert [json.loads(t) for t in rows["target"]] == [
        {
            "note_number": "DN-7781",
            "delivered_on": "2026-11-30",
            "carrier": {"name": "Norder Logistics Ltd", "address": None},
            "lots": ["L1", "L2"],
            "lines": [
                {"description": "Pallet wrap", "amount": "12.50"},
                {"description": "Strapping", "amount": "4.50"},
            ],
        }
    ]


@pytest.mark.slow
def test_focusing_a_field_draws_its_box_on_the_page(live_server, tmp_path):
    pytest.importorskip("rapidocr")
    playwright = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("needs the system's Chromium (.ci/run installs it)")
    import numpy as np

    from invoice_vlm.data.synth import generate

    document = generate("pallet_label", 11)
    upload = tmp_path / "label.png"
    document.image.convert("RGB").save(upload)
    shipment = document.data["shipment_id"]
    url = live_server(InvoiceExtractor.from_pretrained(backend="ocr", schema="pallet_label"), ServeConfig())
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/")
        page.set_input_files("#file", str(upload))
        page.click("#extract")
        field = page.locator('input[data-path="shipment_id"]')
        field.wait_for(timeout=60000)
        assert field.input_value() == shipment
        assert page.evaluate("document.activeElement.classList.contains('value')")  # a field has the keyboard
        field.focus()
        mark = page.locator("#mark")
        mark.wait_for(state="visible", timeout=5000)
        assert page.locator("#where").inner_text() == f"shipment_id: printed as \u201c{shipment}\u201d"
        # The drawn box is the evidence's box on the displayed page, and it frames printed text.
        image_box = page.locator("#preview").bounding_box()
        drawn = mark.bounding_box()
        png_bytes = page.screenshot(clip=drawn)
        pixels = np.asarray(Image.open(io.BytesIO(png_bytes)).convert("L"), dtype=float)
        inner = pixels[3:-3, 3:-3]  # inside the 2-pixel border
        assert (inner < 100).mean() > 0.03 and (
            inner > 180
        ).mean() > 0.2  # ink on paper: the value's characters
        browser.close()
    import httpx

    files = {"file": ("label.png", upload.read_bytes(), "image/png")}
    record = httpx.post(url + "/v1/extract", files=files, timeout=60).json()["results"][0]
    x0, y0, x1, y1 = record["evidence"]["shipment_id"]["box"]
    assert drawn["x"] == pytest.approx(image_box["x"] + x0 * image_box["width"], abs=2)
    assert drawn["y"] == pytest.approx(image_box["y"] + y0 * image_box["height"], abs=2)
    assert drawn["width"] == pytest.approx((x1 - x0) * image_box["width"], abs=2)
    assert drawn["height"] == pytest.approx((y1 - y0) * image_box["height"], abs=2)


@pytest.mark.slow
def test_bounded_load_against_the_ocr_backend(live_server):
    pytest.importorskip("rapidocr")
    import asyncio

    import httpx

    from invoice_vlm.data.synth import generate

    buffer = io.BytesIO()
    generate("pallet_label", 3).image.convert("RGB").resize((620, 440)).save(buffer, format="PNG")
    document = buffer.getvalue()
    url = live_server(InvoiceExtractor.from_pretrained(backend="ocr", schema="pallet_label"), ServeConfig())

    async def load(requests: int, concurrency: int) -> list[int]:
        limit = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=120) as http:

            async def one() -> int:
                async with limit:
                    files = {"file": ("label.png", document, "image/png")}
                    return (await http.post(url + "/v1/extract", files=files)).status_code

            return await asyncio.gather(*(one() for _ in range(requests)))

    statuses = asyncio.run(load(48, 16))
    assert statuses == [200] * 48


@pytest.mark.slow
def test_a_batch_becomes_a_queue_reviewed_by_keyboard_then_training_data(
    live_server, tiny_model, tmp_path, capsys
):
    """The loop of docs/serve.md: extract a batch with --review-dir, review three documents with the keyboard only
    (one value corrected, one overtyped and put back with Esc), skip one, fine-tune on the accepted ones and evaluate
    the model before and after. (Clicking a word to fill a field: the multi-page test below.)"""
    pytest.importorskip("rapidocr")
    pytest.importorskip("datasets")
    playwright = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("needs the system's Chromium (.ci/run installs it)")
    import os

    import numpy as np

    from invoice_vlm.cli import main
    from invoice_vlm.data.synth import generate
    from invoice_vlm.review import review_items

    reviews = tmp_path / "reviews"
    files, truth = [], {}
    for seed in range(5):
        document = generate("pallet_label", 40 + seed)
        path = tmp_path / f"label{seed}.png"
        document.image.convert("RGB").save(path)
        files.append(str(path))
        truth[path.name] = document.data
    flags = ["--backend", "ocr", "--schema", "pallet_label", "--no-progress", "--review-dir", str(reviews)]
    assert (
        main(["extract", *files, *flags, "--min-confidence", "0.999", "-o", str(tmp_path / "out.jsonl")]) == 0
    )
    assert "5 result(s) queued for review" in capsys.readouterr().err
    extractor = InvoiceExtractor.from_pretrained(backend="ocr", schema="pallet_label")
    config = ServeConfig(review_dir=reviews, reviewers={"ann": "key-ann"}, holdout=0.34)
    url = live_server(extractor, config)

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/")
        page.focus("#key")
        page.keyboard.type("key-ann")
        page.keyboard.press("Tab")  # the key is taken when the field is left; the queue opens
        page.wait_for_selector("#progress:has-text('5 of 5 left')", timeout=15000)

        def active_path() -> str:
            return page.evaluate("document.activeElement && document.activeElement.dataset.path || ''")

        def tab_to(path: str) -> None:
            for _ in range(80):
                if active_path() == path:
                    return
                page.keyboard.press("Tab")
            raise AssertionError(f"Tab never reached {path}")

        def source() -> str:
            return page.locator("#status").inner_text().split(":")[0].split()[-1]

        # 1: the focused field's box is drawn where its value is printed; a value is corrected by typing.
        page.wait_for_selector("input[data-path='shipment_id']", timeout=15000)
        first = source()
        tab_to("shipment_id")
        mark = page.locator("#mark")
        mark.wait_for(state="visible", timeout=5000)
        shipment = truth[Path(first).name]["shipment_id"]
        assert page.locator("#where").inner_text() == f"shipment_id: printed as \u201c{shipment}\u201d"
        pixels = np.asarray(
            Image.open(io.BytesIO(page.screenshot(clip=mark.bounding_box()))).convert("L"), dtype=float
        )
        inner = pixels[3:-3, 3:-3]
        assert (inner < 100).mean() > 0.03 and (inner > 180).mean() > 0.2  # the value's ink on paper
        if "INVOICE_VLM_SCREENSHOT" in os.environ:
            page.screenshot(path=os.environ["INVOICE_VLM_SCREENSHOT"], full_page=True)
        tab_to("salesman")
        page.keyboard.press("Control+A")
        page.keyboard.type("Ann Reviewer")
        page.wait_for_selector("#status:has-text('Valid')", timeout=5000)
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#status:has-text('Saved {first}')", timeout=15000)
        page.wait_for_selector("#progress:has-text('4 of 5 left')", timeout=5000)

        # 2: a value overtyped by mistake, put back with Esc, then back one field and forward again with the keys.
        second = source()
        dock = truth[Path(second).name]["dock"]
        tab_to("dock")
        page.keyboard.press("Control+A")
        page.keyboard.type("D-WRONG")
        page.keyboard.press("Escape")
        assert page.input_value("input[data-path='dock']") == dock
        page.keyboard.press("Shift+Tab")
        assert active_path() != "dock"
        page.keyboard.press("Tab")
        assert active_path() == "dock"
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#status:has-text('Saved {second}')", timeout=15000)

        # 3: skipped; 4: accepted as read.
        skipped = source()
        page.keyboard.press("Alt+S")
        page.wait_for_selector(f"#status:has-text('Skipped {skipped}')", timeout=15000)
        fourth = source()
        page.keyboard.press("Enter")
        page.wait_for_selector(f"#status:has-text('Saved {fourth}')", timeout=15000)
        page.wait_for_selector("#progress:has-text('2 of 5 left (1 skipped by you)')", timeout=5000)
        browser.close()

    rows = review_items(reviews)
    assert sorted(Path(row["source"]).name for row in rows) == sorted(
        Path(s).name for s in (first, second, fourth)
    )
    assert all(row["reviewer"] == "ann" for row in rows) and [row["split"] for row in rows].count("test") == 1
    by_name = {Path(row["source"]).name: json.loads(row["suffix"]) for row in rows}
    assert by_name[Path(first).name]["salesman"] == "Ann Reviewer"
    assert by_name[Path(first).name]["shipment_id"] == shipment
    assert by_name[Path(second).name]["dock"] == dock

    out = tmp_path / "model"
    code = main(
        ["finetune", "--base-model", str(tiny_model), "--data", str(reviews), "--schema", "pallet_label",
         "--output-dir", str(out), "--num-train-epochs", "1"]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(
        ["evaluate", "--model", str(out), "--before", str(tiny_model), "--data", str(reviews), "--split", "test",
         "--no-evidence", "--max-new-tokens", "16", "--no-progress"]
    )  # fmt: skip
    table = capsys.readouterr().out
    assert code == 0
    assert "| metric | before | after | change |" in table and "| field_accuracy |" in table


@pytest.mark.slow
def test_a_queued_multi_page_document_shows_every_page_and_boxes_on_the_right_one(live_server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if _chromium() is None:
        pytest.skip("needs the system's Chromium (.ci/run installs it)")
    from invoice_vlm.review import ReviewQueue, review_items

    pages = [Image.new("RGB", (300, 400), "white"), Image.new("RGB", (300, 400), "white")]
    whole = {
        "invoice_number": "INV-77", "invoice_date": "2026-11-02", "total": "17.00",
        "line_items": [{"description": "Pallet wrap", "amount": "12.50"}, {"description": "Strapping", "amount": "4.50"}],
    }  # fmt: skip
    at = {"found": True, "page": 1, "box": [0.5, 0.8, 0.7, 0.85], "text": "17.00", "score": 1.0}
    record = {"source": "inv77.pdf", "valid": True, "data": whole, "confidence": {"total": 0.4},
              "evidence": {"total": at}, "needs_review": ["total"]}  # fmt: skip
    words = [{"text": "17.00", "page": 1, "box": [0.5, 0.8, 0.7, 0.85]}]
    ReviewQueue(tmp_path / "reviews").add(pages, record, prompt="extract", words=words)
    extractor = InvoiceExtractor(FakeBackend(json.dumps(whole)), "invoice", evidence=False)
    url = live_server(extractor, ServeConfig(review_dir=tmp_path / "reviews"))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector(".sheet[data-page='1'] img", timeout=15000)
        assert page.locator(".sheet").count() == 2
        total = page.locator("input[data-path='total']")
        assert (
            page.evaluate("document.activeElement.dataset.path") == "total"
        )  # the flagged field opens focused
        page.wait_for_selector(".sheet[data-page='1'] #mark:not(.hidden)", timeout=5000)
        assert page.locator("#where").inner_text() == "total: printed as \u201c17.00\u201d on page 2"
        sheet, drawn = (
            page.locator(".sheet[data-page='1']").bounding_box(),
            page.locator("#mark").bounding_box(),
        )
        assert drawn["y"] == pytest.approx(sheet["y"] + 0.8 * sheet["height"], abs=3)
        total.fill("")
        page.locator(".sheet[data-page='1'] .word[data-text='17.00']").click()
        assert total.input_value() == "17.00"
        page.keyboard.press("Enter")
        page.wait_for_selector("#status:has-text('Saved inv77.pdf')", timeout=15000)
        browser.close()
    assert len(review_items(tmp_path / "reviews")[0]["pages"]) == 2
