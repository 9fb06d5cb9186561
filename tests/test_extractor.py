from __future__ import annotations

import json

import pytest
from PIL import Image

from invoice_vlm import Generation, InvoiceExtractor
from invoice_vlm.backends import backends
from invoice_vlm.config import CONFIG_NAME
from invoice_vlm.errors import ConfigError, DocumentError
from invoice_vlm.testing import FakeBackend

from .test_parsing import PALLET

GOOD = json.dumps(PALLET)


def images(n):
    return [Image.new("RGB", (50 + i, 40), "white") for i in range(n)]


def test_extract_uses_schema_prompt_and_validates():
    fake = FakeBackend(GOOD)
    ex = InvoiceExtractor(backend=fake, schema="pallet_label")
    r = ex.extract(images(1)[0])
    assert r.valid and r.to_dict() == PALLET
    assert fake.calls == [((50, 40), "extract Document data in JSON format")]
    assert r.confidence == {}


def test_generation_confidence_flows_to_fields():
    conf = tuple(0.5 if i == GOOD.index("P248") else 0.99 for i in range(len(GOOD)))
    ex = InvoiceExtractor(backend=FakeBackend(Generation(GOOD, conf)), schema="pallet_label")
    r = ex.extract(images(1)[0])
    assert r.confidence["shipment_id"] == 0.5
    assert r.confidence["route"] == 0.99


def test_batch_keeps_order_and_isolates_failures(tmp_path):
    bad_path = tmp_path / "broken.png"
    bad_path.write_bytes(b"garbage")
    answers = [GOOD, "not json", RuntimeError("CUDA out of memory"), GOOD.replace("V183", "Q999")]
    ex = InvoiceExtractor(backend=FakeBackend(answers), schema="pallet_label")
    docs = [*images(2), bad_path, *images(2)]
    results = ex.extract_batch(docs, batch_size=8, progress=False)
    assert len(results) == 5
    assert [r.valid for r in results] == [True, False, False, False, True]
    assert results[1].raw_text == "not json"
    assert "broken.png" in results[2].errors[0] and results[2].source == str(bad_path)
    assert "generation failed: RuntimeError: CUDA out of memory" in results[3].errors[0]
    assert results[4].to_dict()["route"] == "Q999-RZ-924"
    # "Could not be read" is a boolean, not a message to parse: the file and the failed generation; an answer
    # that holds no JSON was read, and is only invalid.
    assert [r.unreadable for r in results] == [False, False, True, True, False]
    assert [r.to_record()["unreadable"] for r in results] == [False, False, True, True, False]


def test_from_error_and_the_deprecated_failed_alias():
    from invoice_vlm import Extraction

    read = Extraction.from_error("no JSON object", raw_text="sorry", unreadable=False)
    assert not read.valid and not read.unreadable and read.errors == ["no JSON object"]
    assert Extraction.from_error("x.png does not exist", source="x.png").unreadable
    with pytest.warns(DeprecationWarning, match="renamed Extraction.from_error"):
        old = Extraction.failed("x.png does not exist", source="x.png")
    assert old.unreadable and old.source == "x.png" and not old.valid


def test_extract_and_batch_agree():
    respond = lambda image, prompt: GOOD.replace("4", str(image.width % 10))  # noqa: E731
    ex = InvoiceExtractor(backend=FakeBackend(respond), schema="pallet_label")
    docs = images(5)
    singles = [ex.extract(d).to_dict() for d in docs]
    assert [r.to_dict() for r in ex.extract_batch(docs, batch_size=2, progress=False)] == singles


def test_extract_raises_for_unreadable_document():
    ex = InvoiceExtractor(backend=FakeBackend(GOOD), schema="pallet_label")
    with pytest.raises(DocumentError):
        ex.extract("no-such-file.png")


def test_backend_returning_wrong_count_is_retried_per_item():
    class Short:
        def generate(self, images, request):
            return [Generation(GOOD)]

    ex = InvoiceExtractor(backend=Short(), schema="pallet_label")
    results = ex.extract_batch(images(3), progress=False)
    assert [r.valid for r in results] == [True, True, True]  # retried one by one, each then gets one answer


def test_out_of_memory_halves_the_batch_down_to_one_page():
    class SmallGPU:
        """Runs out of memory above two pages; page 5 fails even alone."""

        def __init__(self):
            self.sizes = []

        def generate(self, images, request):
            self.sizes.append(len(images))
            if len(images) > 2:
                raise MemoryError("CUDA out of memory")  # stands for torch.cuda.OutOfMemoryError
            if any(image.width == 45 for image in images):
                raise RuntimeError("this page breaks the model")
            return [Generation(GOOD) for _ in images]

    backend = SmallGPU()
    pages = [Image.new("RGB", (40 + i, 30), "white") for i in range(8)]
    results = InvoiceExtractor(backend=backend, schema="pallet_label").extract_batch(
        pages, batch_size=8, progress=False
    )
    assert [r.valid for r in results] == [True] * 5 + [False] + [True] * 2
    assert "this page breaks the model" in results[5].errors[0]
    assert backend.sizes == [8, 4, 2, 2, 4, 2, 1, 1, 2]  # halves, never all eight one by one


def test_old_backend_contract_is_refused_with_what_to_change():
    class OldStyle:
        def generate(self, images, prompt):
            return ["{}" for _ in images]

    class Binder:
        def bind_schema(self, schema):
            pass

        def generate(self, images, request):
            return [Generation("{}") for _ in images]

    for backend in (OldStyle(), Binder()):
        with pytest.raises(
            TypeError, match=r"old backend contract .*generate\(images, request\) -> list\[Generation\]"
        ):
            InvoiceExtractor(backend=backend, schema="pallet_label")

    class TextBack:  # the new signature, but text back instead of Generation: every page says why
        def generate(self, images, request):
            return [GOOD for _ in images]

    results = InvoiceExtractor(backend=TextBack(), schema="pallet_label").extract_batch(
        images(2), progress=False
    )
    assert all(not r.valid and "it returned text, not Generation" in r.errors[0] for r in results)


def test_request_carries_prompt_schema_and_settings():
    backend = FakeBackend({"route": "R1"})  # structured data: used as is, nothing parsed
    ex = InvoiceExtractor(backend=backend, schema="pallet_label")
    result = ex.extract(images(1)[0])
    request = backend.requests[0]
    assert request.prompt == ex.prompt and request.schema is ex.schema
    assert not request.constrained and request.json_schema == {}
    assert result.partial == {"route": "R1"} and result.raw_text == '{"route": "R1"}'
    assert ex.generation is None and not ex.constrained  # a backend without decoding settings
    with pytest.raises(ConfigError, match="does not decode"):
        InvoiceExtractor(backend=backend, schema="pallet_label", constrained=True)


def test_constructor_validates_inputs():
    with pytest.raises(TypeError, match="generate"):
        InvoiceExtractor(backend=object(), schema="pallet_label")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        InvoiceExtractor(backend=FakeBackend(GOOD), schema="pallet_label").extract_batch(
            images(1), batch_size=0
        )


@pytest.fixture
def fake_plugin():
    backends.register("fake", FakeBackend)
    yield
    backends.unregister("fake")


def test_save_and_reload_through_registered_backend(tmp_path, fake_plugin):
    answer = tmp_path / "answer.txt"
    answer.write_text(GOOD)
    ex = InvoiceExtractor.from_pretrained(
        answer, backend="fake", schema="pallet_label", prompt="read the label"
    )
    out = ex.save_pretrained(tmp_path / "saved")
    saved = json.loads((out / CONFIG_NAME).read_text())
    assert (
        saved["schema"] == "pallet_label"
        and saved["prompt"] == "read the label"
        and saved["backend"] == "fake"
    )
    assert saved["schema_version"] == "2" and "version" in saved
    assert "generation" in saved and saved["generation"] == {}  # FakeBackend does not decode
    # The saved directory supplies schema, prompt and backend by itself.
    (out / "answer.txt").write_text(GOOD)

    class Reload(FakeBackend):
        @classmethod
        def from_pretrained(cls, model=None, **options):
            assert model == out
            return cls(GOOD)

    backends.register("fake", Reload, replace=True)
    again = InvoiceExtractor.from_pretrained(out)
    assert again.prompt == "read the label" and again.schema.name == "pallet_label"
    assert again.extract(images(1)[0]).to_dict() == ex.extract(images(1)[0]).to_dict()
    with pytest.raises(ConfigError, match="trained with prompt 'read the label'"):
        InvoiceExtractor.from_pretrained(out, prompt="extract Document data in JSON format")
    with pytest.raises(ConfigError, match="schema 'pallet_label', not 'invoice'"):
        InvoiceExtractor.from_pretrained(out, schema="invoice")


def test_unknown_saved_keys_warn(tmp_path, fake_plugin):
    from invoice_vlm.config import ExtractorConfig
    from invoice_vlm.errors import InvoiceVLMWarning

    (tmp_path / CONFIG_NAME).write_text(
        json.dumps({"schema": "invoice", "prompt": "p", "backend": "fake", "from_the_future": 1})
    )
    with pytest.warns(InvoiceVLMWarning, match="from_the_future"):
        assert ExtractorConfig.load(tmp_path).prompt == "p"


def test_missing_schema_is_explained():
    with pytest.raises(ConfigError, match="Pass schema="):
        InvoiceExtractor.from_pretrained("whatever")
