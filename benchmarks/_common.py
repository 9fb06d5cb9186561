"""What the benchmarks share: the small random models they measure, their pages, a peak-memory probe, and the
memorised-documents measurement of jump-forward decoding."""

from __future__ import annotations

import json
import statistics
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


def memorisable(folder: Path, n: int, schema: str = "pallet_label") -> Path:
    """``n`` generated documents of ``schema`` as a training folder, each with a coloured band a small model tells
    apart."""
    from invoice_vlm import get_schema
    from invoice_vlm.data.synth import generate

    spec = get_schema(schema)
    train = folder / "train"
    train.mkdir(parents=True)
    rows = []
    for i in range(n):
        doc = generate(spec, 1000 + i)
        image = doc.image.copy()
        band = ((i * 73) % 256, (i * 151) % 256, (i * 199) % 256)
        ImageDraw.Draw(image).rectangle([0, 0, image.width, image.height // 3], fill=band)
        image.save(train / f"{i}.png")
        rows.append({"image": f"{i}.png", "prefix": spec.prompt, "suffix": spec.dumps(doc.data)})
    (train / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def memorise(
    base: Path, data: Path, schema: str, out: Path, docs: int, learning_rate: float = 5e-3
) -> int | None:
    """Fine-tune ``base`` (LoRA) on the ``docs`` documents in ``data`` until it memorises them (at most 1,000
    epochs); the step it stopped at, or ``None`` when it did not memorise them."""
    from invoice_vlm.finetune import FinetuneConfig, finetune
    from invoice_vlm.testing import stop_when_memorised

    stop = stop_when_memorised(max_loss=0.02)
    finetune(
        FinetuneConfig(
            base_model=str(base), data=str(data), schema=schema, output_dir=str(out), num_train_epochs=1000,
            learning_rate=learning_rate, per_device_train_batch_size=docs, logging_steps=1, lora_dropout=0.0,
            report_to="none",
        ),
        callbacks=[stop],
    )  # fmt: skip
    return stop.memorised_at


JUMP_MODES = {
    "unconstrained": {"constrained": False},
    "constrained": {"constrained": True, "generation": {"jump_forward": False}},
    "jump-forward": {"constrained": True, "generation": {"jump_forward": True}},
}


def jump_forward_rounds(
    model: Path, data: Path, schema: str, batch_sizes: list[int], rounds: int
) -> list[dict]:
    """Read the memorised documents in ``data`` with ``model`` three ways (`JUMP_MODES`) at each batch size.

    Each mode must write the memorised documents (else `SystemExit`, no ratio). Per batch size: seconds per document
    (the median of ``rounds`` rounds; odd rounds run the modes in reverse, so whichever follows another mode's work
    pays for the switch), forward passes per document, and unconstrained over jump-forward seconds per round and
    their median.
    """
    from invoice_vlm import InvoiceExtractor
    from invoice_vlm.data import load

    rows = load(data, schema=schema)["train"]
    images, targets = list(rows["image"]), list(rows["target"])
    readers = {
        name: InvoiceExtractor.from_pretrained(model, evidence=False, **options)  # type: ignore[arg-type]
        for name, options in JUMP_MODES.items()
    }
    passes = {name: [0] for name in readers}
    for name, reader in readers.items():
        head = reader.backend.model.get_output_embeddings()
        head.register_forward_hook(lambda *_, count=passes[name]: count.__setitem__(0, count[0] + 1))
    table = []
    for batch in batch_sizes:
        seconds: dict[str, list[float]] = {name: [] for name in readers}
        for name in readers:  # warm up, and check the outputs
            got = [r.raw_text for r in readers[name].extract_batch(images, batch_size=batch, progress=False)]
            if got != targets:
                raise SystemExit(
                    f"{name} at batch {batch} did not write the memorised documents; no ratio printed"
                )
            passes[name][0] = 0
        for round_ in range(rounds):
            for name in list(readers) if round_ % 2 == 0 else list(reversed(readers)):
                start = time.perf_counter()
                readers[name].extract_batch(images, batch_size=batch, progress=False)
                seconds[name].append((time.perf_counter() - start) / len(images))
        ratios = [
            free / jump for free, jump in zip(seconds["unconstrained"], seconds["jump-forward"], strict=True)
        ]
        table.append(
            {
                "batch": batch,
                "seconds_per_doc": {
                    name: round(statistics.median(values), 4) for name, values in seconds.items()
                },
                "passes_per_doc": {
                    name: round(passes[name][0] / (rounds * len(images)), 1) for name in readers
                },
                "round_ratios": [round(r, 3) for r in ratios],
                "ratio": round(statistics.median(ratios), 3),
            }
        )
    return table
