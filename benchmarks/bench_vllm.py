"""Extraction throughput of the vllm backend against the transformers (paligemma) backend, side by side, on one GPU.

    python benchmarks/bench_vllm.py [--docs 64] [--tokens 64] [--batch-sizes 8 32] [--adapter]

Needs a CUDA GPU and the ``vllm`` extra. The model is PaliGemma-3B-448's architecture with random weights (as in
``bench_gpu.py``: no download), saved once and loaded by both backends exactly as a user's model is; ``--adapter``
adds a random LoRA adapter (r=8 on the language model's projections), served by vLLM as a ``LoRARequest`` and merged
by the transformers backend. Every page yields exactly ``--tokens`` tokens on both backends (``min_new_tokens`` holds
end-of-sequence back; the script checks the counts and prints no ratio otherwise). The transformers backend runs
``extract_batch`` at each ``--batch-sizes``; vLLM gets all ``--docs`` pages in one call and schedules them itself
(continuous batching). Printed: images/s of each and the ratio vLLM / transformers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import pages
from bench_gpu import FULL, build


def timed(extractor: object, images: list, batch: int, tokens: int) -> float:
    """Images per second for ``images`` in calls of ``batch`` pages; every page must be ``tokens`` long."""
    backend = extractor.backend  # type: ignore[attr-defined]
    request = extractor.request  # type: ignore[attr-defined]
    start = time.perf_counter()
    for at in range(0, len(images), batch):
        counts = {g.num_tokens for g in backend.generate(images[at : at + batch], request)}
        if counts != {tokens}:
            raise SystemExit(f"unequal output lengths {sorted(counts)} (wanted {tokens}); no ratio printed")
    return len(images) / (time.perf_counter() - start)


def lora_adapter(model_dir: Path, folder: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PaliGemmaForConditionalGeneration

    base = PaliGemmaForConditionalGeneration.from_pretrained(model_dir, dtype=torch.bfloat16)
    torch.manual_seed(1)
    config = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        init_lora_weights=False,
    )
    out = folder / "adapter"
    get_peft_model(base, config).save_pretrained(out)
    del base
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=64, help="pages per measurement (default: 64)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per page (default: 64)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[8, 32], help="transformers batch sizes (default: 8 32)"
    )
    parser.add_argument(
        "--adapter", action="store_true", help="serve a random LoRA adapter too (default: off)"
    )
    parser.add_argument(
        "--gpu-memory-utilization", type=float, default=0.5, help="vLLM's share of the GPU (default: 0.5)"
    )
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: the vllm backend needs one")
    from invoice_vlm import InvoiceExtractor

    settings = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_dir, _, _ = build(folder, FULL, "cuda")
        adapter = lora_adapter(model_dir, folder) if args.adapter else None
        images = pages(args.docs, size=FULL["image_size"])
        common = {
            "adapter": adapter,
            "schema": "pallet_label",
            "generation": settings,
            "constrained": False,
            "evidence": False,
        }
        served = InvoiceExtractor.from_pretrained(
            model_dir,
            backend="vllm",
            engine_options={"gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": 2048},
            **common,
        )
        timed(served, images[:4], 4, args.tokens)  # warm up (CUDA graphs, LoRA load)
        vllm_rate = timed(served, images, len(images), args.tokens)
        reference = InvoiceExtractor.from_pretrained(model_dir, **common)
        rows = []
        for batch in args.batch_sizes:
            timed(reference, images[:batch], batch, args.tokens)  # warm up this shape
            rate = timed(reference, images, batch, args.tokens)
            rows.append(
                {
                    "transformers_batch": batch,
                    "transformers_images_per_s": round(rate, 3),
                    "vllm_images_per_s": round(vllm_rate, 3),
                    "vllm_over_transformers": round(vllm_rate / rate, 2),
                }
            )
    report = {
        "architecture": "PaliGemma-3B-448 (random weights)",
        "adapter": "LoRA r=8 (LoRARequest)" if args.adapter else None,
        "gpu": torch.cuda.get_device_name(),
        "docs": args.docs,
        "tokens": args.tokens,
        "runs": rows,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
