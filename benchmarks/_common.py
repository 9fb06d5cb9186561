"""What the benchmarks share: the small random models they measure, their pages, and a peak-memory probe."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from PIL import Image, ImageDraw

SMALL = {  # the reference size: 224 px, 4 vision and 4 text layers, width 256
    "image_size": 224,
    "patch_size": 14,
    "hidden_size": 256,
    "num_layers": 4,
    "num_heads": 4,
    "vision_hidden_size": 256,
    "vision_layers": 4,
}


FAMILY_SIZES = {  # the same size in each family's own terms (None: the family's builder has no such setting)
    "paligemma": {},
    "idefics3": {"max_edge": 448},  # a 448-px page: 2 x 2 tiles of 224 px and the whole, 64 tokens each
    "gemma3": {"tokens_per_image": 64},  # 16 x 16 patches pooled to 8 x 8
    # A page within 224 x 224 pixels: 16 x 16 patches of 14 px merged 2 x 2, 64 tokens for a square page.
    "qwen_vl": {"image_size": None, "max_pixels": 224 * 224},
    # DaViT's own four small stages (the tiny builder's) at 224 px: 7 x 7 tokens and one pooled token.
    "florence2": {"patch_size": None, "vision_hidden_size": None, "vision_layers": None},
}

IMAGE_OPTIONS = {  # the page budget the small model's processor was saved with, in place of the family's default
    "qwen_vl": {"size": {"shortest_edge": 56 * 56, "longest_edge": 224 * 224}},
}
"""Families whose document default (Qwen-VL: 1280 tokens a page) would make ours compute more than the snippet."""


def build_small_model(folder: str | Path, family: str = "paligemma", **overrides: int) -> Path:
    """The small random model of ``family``, built offline (seeded: the same weights every run); ``overrides``
    change its sizes (``image_size=448``)."""
    from invoice_vlm.testing import build_tiny_model

    merged = {**SMALL, **FAMILY_SIZES[family], **overrides}
    sizes = {key: value for key, value in merged.items() if value is not None}
    return build_tiny_model(family, Path(folder) / "model", schemas=["pallet_label"], **sizes)


def pages(n: int, size: int = 448) -> list[Image.Image]:
    """``n`` different pages (colour and a block placed per index)."""
    out = []
    for i in range(n):
        image = Image.new("RGB", (size, size), ((i * 53) % 256, (i * 97) % 256, 180))
        ImageDraw.Draw(image).rectangle([20 + i * 7, 30, 200 + i * 5, 260], fill=(20, (i * 31) % 256, 90))
        out.append(image)
    return out


class PeakMemory:
    """Peak resident memory above the starting point while the block runs (CPU), or CUDA's own peak."""

    def __init__(self) -> None:
        self.peak_mb = 0.0

    @staticmethod
    def _rss_mb() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * 4096 / 2**20

    def __enter__(self) -> PeakMemory:
        import torch

        self._cuda = torch.cuda.is_available()
        if self._cuda:
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated() / 2**20
            return self
        self._base = self._rss_mb()
        self._top = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._top = max(self._top, self._rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        import torch

        if self._cuda:
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20 - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self._top, self._rss_mb()) - self._base
