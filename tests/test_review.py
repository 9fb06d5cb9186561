"""The review folder: a queue of the pages that need a person (order, leases, skips, restarts), accepted corrections
written once with who accepted them, and the HTTP API reviewers walk it with."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from invoice_vlm.errors import InputError
from invoice_vlm.review import ReviewConflict, ReviewQueue, drop_reviewer, needs_person, review_items

from .conftest import PALLET_LABEL

SLIP = PALLET_LABEL


def page(text: str = "SHIPMENT P24812736099") -> Image.Image:
    image = Image.new("RGB", (400, 120), "white")
    ImageDraw.Draw(image).text((20, 40), text, fill="black", font=ImageFont.load_default(size=22))
    return image


def record(source: str, *, valid: bool = True, low: float = 0.99, nowhere: int = 0) -> dict:
    """An extract record as the CLI writes it, flagged by validity, least confidence and values printed nowhere."""
    evidence = {
        f"field{i}": {"found": False, "page": None, "box": None, "text": "", "score": 0.0}
        for i in range(nowhere)
    }
    flagged = [f"field{i}" for i in range(nowhere)] + (["shipment_id"] if low < 0.8 else [])
    return {
        "source": source, "valid": valid, "data": SLIP if valid else None, "partial": None if valid else {"route": "V1"},
        "errors": [] if valid else ["products: Field required"], "field_errors": {} if valid else {"products": "Field required"},
        "confidence": {"route": 0.99, "shipment_id": low}, "evidence": evidence, "needs_review": flagged,
    }  # fmt: skip


def target(**changes) -> str:
    return json.dumps({**SLIP, **changes})


def filled(root: Path, **options) -> tuple[ReviewQueue, dict[str, str]]:
    queue = ReviewQueue(root, **options)
    ids = {
        "sure": queue.add([page()], record("sure.png", low=0.95), prompt="p"),
        "unsure": queue.add([page()], record("unsure.png", low=0.31), prompt="p"),
        "invalid": queue.add([page()], record("invalid.png", valid=False), prompt="p"),
        "invented": queue.add([page()], record("invented.png", nowhere=2), prompt="p"),
    }
    return queue, ids


def test_most_uncertain_first_and_who_needs_a_person(tmp_path):
    queue, ids = filled(tmp_path / "reviews")
    assert queue.order() == [ids["invalid"], ids["invented"], ids["unsure"], ids["sure"]]
    assert queue.progress() == {"left": 4, "accepted": 0, "total": 4, "skipped": 0}
    assert needs_person(record("a", valid=False)) and needs_person(record("b", nowhere=1))
    assert not needs_person(record("c"))


def test_leases_keep_reviewers_apart_until_they_expire(tmp_path):
    queue, ids = filled(tmp_path / "reviews", lease_s=0.4)
    ann = queue.next("ann")
    bob = queue.next("bob")
    assert ann is not None and bob is not None
    assert (ann.id, bob.id) == (ids["invalid"], ids["invented"])
    with pytest.raises(ReviewConflict, match="open with ann"):
        queue.open(ann.id, "bob")
    with pytest.raises(ReviewConflict, match="open with ann"):
        queue.accept(ann.id, "bob", target())
    assert queue.next("ann").id == ann.id  # her own lease: she gets it back, renewed
    time.sleep(0.5)  # both leases expire: the most uncertain goes to whoever asks first
    assert queue.next("bob").id == ids["invalid"]


def test_next_moves_on_and_skips_come_back_last(tmp_path):
    queue, ids = filled(tmp_path / "reviews")
    first = queue.next("ann")
    assert queue.next("ann", after=first.id).id == ids["invented"]  # Next: the one after, first released
    assert queue.next("bob").id == ids["invalid"]  # released, so Bob gets the most uncertain
    queue.skip(ids["invented"], "ann")
    assert queue.progress("ann")["skipped"] == 1
    assert queue.next("ann").id == ids["unsure"]
    queue.accept(ids["unsure"], "ann", target())
    assert queue.next("ann").id == ids["sure"]
    queue.accept(ids["sure"], "ann", target())
    assert queue.next("ann").id == ids["invented"]  # only what she skipped is left
    assert queue.next("carl") is None  # the last one is open with Ann
    with pytest.raises(ReviewConflict, match="not an id this queue gives"):
        queue.skip("../../etc", "ann")
    with pytest.raises(ReviewConflict, match="no waiting review item"):
        queue.skip(ids["sure"], "ann")  # accepted already


def test_accepted_once_with_who_when_and_the_model_answer(tmp_path):
    pytest.importorskip("datasets")
    from invoice_vlm.data import load

    queue, ids = filled(tmp_path / "reviews")
    item = queue.open(ids["invalid"], "ann")
    saved = queue.accept(item.id, "ann", target(route="V183-RZ-925"))
    assert saved["reviewer"] == "ann" and saved["split"] == "train"
    with pytest.raises(ReviewConflict, match="already accepted by ann"):
        queue.accept(item.id, "bob", target())
    rows = review_items(tmp_path / "reviews")
    assert len(rows) == 1
    row = rows[0]
    assert row["reviewer"] == "ann" and row["queue_id"] == item.id and row["source"] == "invalid.png"
    assert row["original"] == {"route": "V1"} and row["accepted_at"].endswith("+00:00")
    assert json.loads(row["suffix"])["route"] == "V183-RZ-925"
    assert queue.get(item.id).accepted["reviewer"] == "ann"  # still readable: Previous shows it
    assert queue.progress() == {"left": 3, "accepted": 1, "total": 4, "skipped": 0}
    loaded = load(tmp_path / "reviews", schema="pallet_label")["train"]
    assert json.loads(loaded[0]["target"])["route"] == "V183-RZ-925"


def test_a_restarted_server_finds_the_queue_and_the_leases(tmp_path):
    queue, ids = filled(tmp_path / "reviews")
    held = queue.next("ann")
    queue.skip(ids["sure"], "bob")
    again = ReviewQueue(tmp_path / "reviews")
    assert again.order() == queue.order() and again.progress("bob")["skipped"] == 1
    with pytest.raises(ReviewConflict, match="open with ann"):
        again.open(held.id, "bob")


def test_holdout_sends_every_nth_accepted_document_to_test(tmp_path):
    queue, ids = filled(tmp_path / "reviews", holdout=0.34)
    splits = [queue.accept(ids[name], "ann", target())["split"] for name in ("sure", "unsure", "invalid")]
    assert splits == ["train", "train", "test"]
    with pytest.raises(InputError, match="holdout"):
        ReviewQueue(tmp_path / "other", holdout=1.0)


def test_one_reviewers_work_is_removed_and_the_rest_stays(tmp_path):
    queue, ids = filled(tmp_path / "reviews")
    for name, who in (("sure", "ann"), ("unsure", "bob"), ("invalid", "ann")):
        queue.accept(ids[name], who, target())
    assert drop_reviewer(tmp_path / "reviews", "ann") == 2
    rows = review_items(tmp_path / "reviews")
    assert [row["reviewer"] for row in rows] == ["bob"]
    assert (tmp_path / "reviews" / "train" / rows[0]["image"]).is_file()
    removed = (tmp_path / "reviews" / "removed" / "train" / "annotations.jsonl").read_text().splitlines()
    assert len(removed) == 2 and all(
        (tmp_path / "reviews/removed/train" / json.loads(r)["image"]).is_file() for r in removed
    )


def _accept_all(queue: ReviewQueue, item_ids: list[str], reviewer: str) -> int:
    """Accept every item it can, each signed in the target by ``reviewer``; how many it got."""
    done = 0
    for item_id in item_ids:
        try:
            queue.accept(item_id, reviewer, target(salesman=reviewer))
            done += 1
        except ReviewConflict:
            pass
    return done


def _accept_in_process(root: str, item_ids: list[str], reviewer: str, out) -> None:
    out.put(_accept_all(ReviewQueue(root), item_ids, reviewer))


def test_concurrent_accepts_lose_nothing_and_write_nothing_twice(tmp_path):
    """Threads and processes accept the same documents at once: each lands exactly once, whole."""
    root = tmp_path / "reviews"
    queue = ReviewQueue(root)
    ids = [queue.add([page(f"DOC {i}")], record(f"doc{i}.png", low=0.2), prompt="p") for i in range(12)]
    results = multiprocessing.get_context("spawn").Queue()
    processes = [
        multiprocessing.get_context("spawn").Process(
            target=_accept_in_process, args=(str(root), ids, f"p{n}", results)
        )
        for n in range(2)
    ]
    for process in processes:
        process.start()
    counts: list[int] = []

    def worker(name: str) -> None:
        counts.append(_accept_all(queue, list(reversed(ids)), name))

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for process in processes:
        process.join(60)
        counts.append(results.get(timeout=5))
    rows = review_items(root)
    assert sum(counts) == 12 and len(rows) == 12
    assert sorted(row["queue_id"] for row in rows) == sorted(ids)  # every one, none twice
    assert all(json.loads(row["suffix"])["salesman"] == row["reviewer"] for row in rows)  # each row whole
    assert len({row["image"] for row in rows}) == 12 and queue.progress()["left"] == 0


def test_a_file_as_the_review_folder_is_refused(tmp_path):
    (tmp_path / "reviews").write_text("")
    with pytest.raises(InputError, match="is a file"):
        ReviewQueue(tmp_path / "reviews")


# --- the queue over HTTP: named reviewer keys, leases, accepts with field errors ------------------------------------


@pytest.fixture
def service(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from invoice_vlm import InvoiceExtractor
    from invoice_vlm.serve import ServeConfig, create_app
    from invoice_vlm.testing import FakeBackend

    _, ids = filled(tmp_path / "reviews")
    extractor = InvoiceExtractor(FakeBackend(json.dumps(SLIP)), "pallet_label", evidence=False)
    config = ServeConfig(review_dir=tmp_path / "reviews", reviewers={"ann": "key-ann", "bob": "key-bob"})
    with TestClient(create_app(extractor, config)) as client:
        yield client, ids


def test_reviewers_walk_the_queue_by_their_own_keys(service, tmp_path):
    client, ids = service
    ann, bob = {"X-API-Key": "key-ann"}, {"Authorization": "Bearer key-bob"}
    assert client.get("/v1/queue").status_code == 401
    assert client.get("/v1/queue", headers={"X-API-Key": "key-eve"}).status_code == 401
    assert client.get("/v1/queue", headers=ann).json() == {
        "reviewer": "ann", "left": 4, "accepted": 0, "total": 4, "skipped": 0,
    }  # fmt: skip
    first = client.post("/v1/queue/next", headers=ann).json()["item"]
    other = client.post("/v1/queue/next", headers=bob).json()["item"]
    assert first["id"] == ids["invalid"] and other["id"] == ids["invented"]
    assert first["record"]["source"] == "invalid.png" and first["progress"]["left"] == 4
    picture = client.get(first["pages"][0], headers=ann)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert client.get(f"/v1/queue/{first['id']}", headers=bob).status_code == 409  # open with Ann
    url = f"/v1/queue/{first['id']}/accept"
    wrong = client.post(url, headers=ann, json={"data": {**SLIP, "products": "none"}})
    assert wrong.status_code == 422 and "products" in wrong.json()["field_errors"]
    assert client.post(url, headers=bob, json={"data": SLIP}).status_code == 409
    done = client.post(url, headers=ann, json={"data": {**SLIP, "dock": "D8"}})
    assert done.status_code == 200, done.text
    assert done.json()["progress"]["left"] == 3 and done.json()["reviewer"] == "ann"
    again = client.post(url, headers=bob, json={"data": SLIP})
    assert again.status_code == 409 and "already accepted by ann" in again.json()["error"]
    assert client.get(f"/v1/queue/{first['id']}", headers=bob).json()["item"]["accepted"]["reviewer"] == "ann"
    skipped = client.post(f"/v1/queue/{other['id']}/skip", headers=bob).json()
    assert skipped["progress"]["skipped"] == 1
    assert client.post("/v1/queue/next", headers=bob).json()["item"]["id"] == ids["unsure"]
    assert client.get("/v1/queue/../../etc", headers=bob).status_code in (404, 409)
    rows = review_items(tmp_path / "reviews")
    assert [(row["reviewer"], json.loads(row["suffix"])["dock"]) for row in rows] == [("ann", "D8")]


def test_an_uploaded_review_records_its_reviewer_and_the_model_answer(service, tmp_path):
    import io

    client, _ = service
    buffer = io.BytesIO()
    page().save(buffer, format="PNG")
    files = {"file": ("slip.png", buffer.getvalue(), "image/png")}
    form = {"data": json.dumps({**SLIP, "load": "22"}), "original": json.dumps(SLIP)}
    answer = client.post("/v1/review", files=files, data=form, headers={"X-API-Key": "key-bob"})
    assert answer.status_code == 200, answer.text
    row = review_items(tmp_path / "reviews")[0]
    assert (
        row["reviewer"] == "bob"
        and row["original"]["load"] == "21"
        and json.loads(row["suffix"])["load"] == "22"
    )


def test_reviewer_keys_must_differ():
    from invoice_vlm.serve import ServeConfig

    with pytest.raises(InputError, match="share a key"):
        ServeConfig(reviewers={"ann": "same", "bob": "same"})
    with pytest.raises(InputError, match="non-empty key"):
        ServeConfig(reviewers={"ann": ""})


# --- a document of several pages: queued whole, accepted whole, scored whole, never trained on page by page -------

PAGE_ONE = {
    "invoice_number": "INV-77",
    "invoice_date": "2026-11-02",
    "line_items": [{"description": "Pallet wrap", "amount": "12.50"}],
}
PAGE_TWO = {"invoice_number": "INV-77", "line_items": [{"description": "Strapping", "amount": "4.50"}], "total": "17.00"}  # fmt: skip
WHOLE = {**PAGE_ONE, "line_items": PAGE_ONE["line_items"] + PAGE_TWO["line_items"], "total": "17.00"}


def two_pages() -> list[Image.Image]:
    second = Image.new(
        "RGB", (400, 130), "white"
    )  # a page of its own height, so the fake model tells them apart
    second.paste(page("Strapping 4.50  TOTAL 17.00"))
    return [page("INVOICE INV-77  Pallet wrap 12.50"), second]


def by_page(image, request):
    """The answer a model gives for each page of the invoice."""
    return json.dumps(PAGE_ONE if image.height == 120 else PAGE_TWO)


def test_a_multi_page_document_is_reviewed_loaded_and_evaluated_whole(tmp_path):
    pytest.importorskip("datasets")
    from invoice_vlm import InvoiceExtractor, evaluate
    from invoice_vlm.data import load
    from invoice_vlm.finetune.train import _one_page
    from invoice_vlm.inputs import OpenedPages
    from invoice_vlm.testing import FakeBackend

    pages = two_pages()
    extractor = InvoiceExtractor(FakeBackend(by_page), "invoice", evidence=False)
    (result,) = extractor.extract_batch(
        [OpenedPages(tuple(pages), "inv77.pdf")], pages="merge", progress=False
    )
    assert result.valid and result.to_dict()["total"] == 17
    queue = ReviewQueue(tmp_path / "reviews")
    item_id = queue.add(pages, {**result.to_record(), "needs_review": ["total"]}, prompt=extractor.prompt)
    item = queue.open(item_id, "ann")
    assert item.pages == 2 and item.page_path(queue.root, 1).is_file()
    with pytest.raises(ReviewConflict, match="there is no page 3"):
        item.page_path(queue.root, 2)
    queue.accept(item_id, "ann", json.dumps(WHOLE))
    row = review_items(tmp_path / "reviews")[0]
    assert row["pages"][0] == row["image"] and len(row["pages"]) == 2
    loaded = load(tmp_path / "reviews", schema="invoice")["train"]
    assert len(loaded) == 1 and [Path(p).name for p in loaded[0]["pages"]] == row["pages"]
    report = evaluate(
        extractor, loaded, progress=False
    )  # both pages read and merged, as extraction reads them
    assert report.metrics["field_accuracy"] == 1.0 and report.num_documents == 1
    with pytest.warns(
        UserWarning, match="1 document\\(s\\) of several pages in the train split are not trained on"
    ):
        assert len(_one_page(loaded, "train")) == 0
    assert drop_reviewer(tmp_path / "reviews", "ann") == 1
    assert sorted(p.name for p in (tmp_path / "reviews/removed/train").glob("*.png")) == sorted(row["pages"])


def test_a_dataset_row_with_broken_pages_is_named(tmp_path):
    pytest.importorskip("datasets")
    from invoice_vlm.data import load
    from invoice_vlm.errors import DatasetError

    folder = tmp_path / "ds" / "train"
    folder.mkdir(parents=True)
    page().save(folder / "a.png")
    rows = [
        {"image": "a.png", "suffix": json.dumps(WHOLE), "pages": ["a.png"]},
        {"image": "a.png", "suffix": json.dumps(WHOLE), "pages": ["b.png", "a.png"]},
        {"image": "a.png", "suffix": json.dumps(WHOLE), "pages": ["a.png", "missing.png"]},
    ]
    (folder / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError) as caught:
        load(tmp_path / "ds", schema="invoice")
    text = str(caught.value)
    assert (
        "two or more" in text
        and "must start with the row's image 'a.png'" in text
        and "'missing.png' does not exist" in text
    )


def test_an_uploaded_multi_page_review_is_kept_whole_where_the_schema_merges_pages(tmp_path):
    pytest.importorskip("fastapi")
    import io

    from fastapi.testclient import TestClient

    from invoice_vlm import InvoiceExtractor
    from invoice_vlm.serve import ServeConfig, create_app
    from invoice_vlm.testing import FakeBackend

    buffer = io.BytesIO()
    first, second = two_pages()
    first.save(buffer, format="TIFF", save_all=True, append_images=[second])
    files = {"file": ("inv77.tif", buffer.getvalue(), "image/tiff")}
    for schema, status in (("invoice", 200), ("pallet_label", 422)):
        extractor = InvoiceExtractor(FakeBackend(by_page), schema, evidence=False)
        with TestClient(create_app(extractor, ServeConfig(review_dir=tmp_path / schema))) as client:
            preview = client.post("/v1/extract?preview=true", files=files).json()
            assert len(preview["previews"]) == 2
            answer = client.post(
                "/v1/review", files=files, data={"data": json.dumps(WHOLE if schema == "invoice" else SLIP)}
            )
            assert answer.status_code == status, answer.text
    assert len(review_items(tmp_path / "invoice")[0]["pages"]) == 2
    assert "reads each page as its own document" in answer.json()["error"]
