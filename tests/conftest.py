from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TEST_SEED = int(os.environ.get("INVOICE_VLM_TEST_SEED", "0"))
"""The seed of every random fixture (tiny models, documents, training runs). CI runs the training tests again with
another seed and with one thread (the nox ``tests`` session), so none of them passes by one seed's luck or one
machine's float rounding."""


def pytest_configure(config: pytest.Config) -> None:
    threads = os.environ.get("INVOICE_VLM_TEST_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random PaliGemma built once per test session."""
    from invoice_vlm.testing import build_tiny_paligemma

    return build_tiny_paligemma(tmp_path_factory.mktemp("tiny") / "model", seed=TEST_SEED)


@pytest.fixture
def fresh_registries():
    """Registries emptied before and after the test, so discovery runs again under the test's patches."""
    from invoice_vlm.backends import backends
    from invoice_vlm.data.synth import synth_kits
    from invoice_vlm.metrics.base import metrics
    from invoice_vlm.schemas import schemas

    registries = (schemas, backends, metrics, synth_kits)
    for registry in registries:
        registry.reset()
    yield schemas, backends
    for registry in registries:
        registry.reset()


@pytest.fixture
def white_image():
    from PIL import Image

    return Image.new("RGB", (120, 80), "white")


PALLET_LABEL = {
    "route": "V183-RZ-924", "pallet_number": "4", "delivery_date": "3/14/2024", "load": "21", "dock": "D7",
    "shipment_id": "P24812736099", "destination": "ACME, 1 Main St", "asn_number": "1234567890", "salesman": "Ann",
    "products": [{"description": "293847 - WIRE", "cases": "10", "sales_units": "40", "layers": "2"}],
    "total_cases": "10", "total_units": "40", "total_layers": "2", "printed_date": "03/14/2024 09:30",
    "page_number": "1 of 1",
}  # fmt: skip
"""A pallet label's values as printed on one (the date as printed, not ISO), for the service and review tests."""


COLORS = [(220, 40, 40), (40, 160, 60), (40, 70, 220), (230, 200, 30), (150, 60, 200), (30, 200, 200)]


def write_documents(
    root: Path, splits: dict[str, int], prompt: str | None = None, seed: int = TEST_SEED
) -> Path:
    """Generated pallet labels in the Roboflow layout, each with a coloured band so a 64-pixel model tells them apart."""
    import json

    from PIL import ImageDraw

    from invoice_vlm import get_schema
    from invoice_vlm.data.synth import generate

    spec = get_schema("pallet_label")
    index = 0
    for split, count in splits.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for _ in range(count):
            doc = generate(spec, seed * 1000 + index)
            image = doc.image.copy()
            ImageDraw.Draw(image).rectangle(
                [0, 0, image.width, image.height // 3], fill=COLORS[index % len(COLORS)]
            )
            image.save(folder / f"{index}.png")
            rows.append(
                {"image": f"{index}.png", "prefix": prompt or spec.prompt, "suffix": spec.dumps(doc.data)}
            )
            index += 1
        (folder / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def four_documents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_documents(tmp_path_factory.mktemp("docs4"), {"train": 4})


@pytest.fixture(scope="session")
def split_documents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_documents(tmp_path_factory.mktemp("docs_split"), {"train": 4, "valid": 2, "test": 2})
