from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random PaliGemma built once per test session."""
    from invoice_vlm.testing import build_tiny_paligemma

    return build_tiny_paligemma(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture
def fresh_registries():
    """Registries emptied before and after the test, so discovery runs again under the test's patches."""
    from invoice_vlm.backends import backends
    from invoice_vlm.schemas import schemas

    schemas.reset()
    backends.reset()
    yield schemas, backends
    schemas.reset()
    backends.reset()


@pytest.fixture
def white_image():
    from PIL import Image

    return Image.new("RGB", (120, 80), "white")
