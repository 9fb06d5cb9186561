"""Extraction throughput against the reference model card's per-image snippet, measured side by side in one run.

    python benchmarks/bench_extract.py [--family paligemma|idefics3|gemma3|qwen_vl|florence2] [--docs 16] [--tokens 48]
                                       [--batch-sizes 1 4 8 16] [--rounds 3]

Both sides use the same small random model of the family (built offline by the script: 224 px, 4 vision and 4 text
layers, width 256), loaded once outside the timing, the same prompt and pages, and exactly ``--tokens`` generated
tokens per page (``min_new_tokens`` = ``max_new_tokens`` on both sides). The snippet is the family's model-card loop:
the prompt (PaliGemma's ``<image>`` + prompt, the chat template with the image, or Florence-2's task prompt as
is), the processor, greedy ``generate`` and ``decode`` for one image at a time. Qwen-VL needs torchvision (run it
in the ``families`` nox session's environment) and is given the small model's own page budget on both sides. Ours
is `InvoiceExtractor.extract_batch` at each batch size,
the whole path: loading pages, generating with per-token confidence, parsing, normalising and validating
(unconstrained, since ``min_new_tokens`` forces tokens past a document's end; see bench_constrained.py for the
grammar's cost; without locating values on the page, ``evidence=False``, which reads each page by OCR when it has
no text layer). Every round times the snippet, then each batch size of ours and of plain batched ``generate``;
the ratios are per round (drifts of a noisy machine cancel) and their medians are reported. Peak memory is the most resident memory above
the starting point during a run (CUDA's own peak on a GPU). The last column is plain batched ``generate`` at the same
batch size (processor, generate, batch_decode: nothing else), the ceiling for any library on this machine; ours
and plain alternate which goes first from round to round, and "vs plain" is the median of the per-round ratios of
their times (plain's time over ours: 1.0 is the ceiling reached).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Any

from _common import IMAGE_OPTIONS, PeakMemory, build_small_model, pages

from invoice_vlm import InvoiceExtractor


def card_prompt(family: str, processor: Any, prompt: str) -> str:
    """The prompt as each family's model card writes it."""
    if family == "paligemma":
        return "<image>" + prompt
    if family == "florence2":
        return prompt
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return str(processor.apply_chat_template(messages, add_generation_prompt=True))


def card_images(family: str, images: list[Any]) -> list[Any]:
    """Images as each family's processor takes them in its card (one list per prompt for chat families)."""
    return list(images) if family in ("paligemma", "florence2") else [[image] for image in images]


def answer_tokens(family: str, generation: Any, input_len: int) -> Any:
    """The generated answer: a decoder-only model returns the prompt in front of it, Florence-2's decoder does not."""
    return generation if family == "florence2" else generation[..., input_len:]


def snippet(
    model: Any, processor: Any, images: list[Any], prompt: str, tokens: int, family: str = "paligemma"
) -> list[str]:
    """The family's model-card inference, one image at a time."""
    import torch

    text = card_prompt(family, processor, prompt)
    out = []
    for image in images:
        model_inputs = processor(text=text, images=card_images(family, [image]), return_tensors="pt").to(
            model.device
        )
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(model.dtype)
        input_len = model_inputs["input_ids"].shape[-1]
        with torch.inference_mode():
            generation = model.generate(
                **model_inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
            generation = answer_tokens(family, generation[0], input_len)
        out.append(processor.decode(generation, skip_special_tokens=True))
    return out


def batched(
    model: Any,
    processor: Any,
    images: list[Any],
    prompt: str,
    tokens: int,
    batch: int,
    family: str = "paligemma",
) -> list[str]:
    """Plain batched ``generate`` with nothing else: the ceiling for any library at this batch size."""
    import torch

    text = card_prompt(family, processor, prompt)
    out: list[str] = []
    for at in range(0, len(images), batch):
        chunk = images[at : at + batch]
        inputs = processor(
            text=[text] * len(chunk),
            images=card_images(family, chunk),
            return_tensors="pt",
            padding=True,
            padding_side="left",
        ).to(model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            generation = model.generate(
                **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False
            )
        out.extend(
            processor.batch_decode(
                answer_tokens(family, generation, inputs["input_ids"].shape[1]), skip_special_tokens=True
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--family",
        default="paligemma",
        choices=["paligemma", "idefics3", "gemma3", "qwen_vl", "florence2"],
        help="(default: paligemma)",
    )
    parser.add_argument("--docs", type=int, default=16, help="pages per measurement (default: 16)")
    parser.add_argument("--tokens", type=int, default=48, help="tokens generated per page (default: 48)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 4, 8, 16], help="(default: 1 4 8 16)"
    )
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per side (default: 5)")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = build_small_model(tmp, args.family)
        family = args.family
        settings = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
        ours = InvoiceExtractor.from_pretrained(
            path,
            schema="pallet_label",
            generation=settings,
            constrained=False,
            evidence=False,
            **({"image_options": IMAGE_OPTIONS[family]} if family in IMAGE_OPTIONS else {}),
        )
        model, processor = ours.backend.model, ours.backend.processor  # the snippet's model, loaded once
        images = pages(args.docs)
        prompt = ours.prompt
        print(
            f"{family}: torch {torch.__version__}, device {ours.backend.device}, {torch.get_num_threads()} threads"
        )
        print(f"{args.docs} pages x {args.tokens} tokens; {args.rounds} paired rounds, medians")
        snippet(model, processor, images[:2], prompt, args.tokens, family)  # warm up
        for batch in args.batch_sizes:
            ours.extract_batch(images[:batch], batch_size=batch, progress=False)
        # Timed rounds, nothing else running in the process; each round pairs the sides, so slow drifts of the
        # machine cancel in the per-round ratios, whose medians are reported.
        ratio: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
        ceiling: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
        versus_plain: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
        rates: dict[int, list[float]] = {b: [] for b in args.batch_sizes}
        snippet_rates: list[float] = []
        for round_ in range(args.rounds):
            start = time.perf_counter()
            texts = snippet(model, processor, images, prompt, args.tokens, family)
            base = time.perf_counter() - start
            snippet_rates.append(args.docs / base)
            for batch in args.batch_sizes:
                seconds: dict[str, float] = {}
                # Rounds alternate which of ours and plain batched generate goes first: whichever follows another
                # shape of work pays for the switch (allocator, thread pool), and that should not fall on one side.
                for side in ("ours", "plain") if round_ % 2 == 0 else ("plain", "ours"):
                    start = time.perf_counter()
                    if side == "ours":
                        extracted = ours.extract_batch(images, batch_size=batch, progress=False)
                    else:
                        batched(model, processor, images, prompt, args.tokens, batch, family)
                    seconds[side] = time.perf_counter() - start
                if batch == 1 and [r.raw_text for r in extracted] != texts:
                    raise SystemExit("our batch-1 output differs from the snippet's: no ratio printed")
                ratio[batch].append(base / seconds["ours"])
                ceiling[batch].append(base / seconds["plain"])
                versus_plain[batch].append(seconds["plain"] / seconds["ours"])
                rates[batch].append(args.docs / seconds["ours"])
        # Peak memory in separate, untimed runs (the sampling thread would slow the timed ones).
        with PeakMemory() as peak:
            snippet(model, processor, images, prompt, args.tokens, family)
        snippet_mb = peak.peak_mb
        memory = {}
        for batch in args.batch_sizes:
            with PeakMemory() as peak:
                ours.extract_batch(images, batch_size=batch, progress=False)
            memory[batch] = peak.peak_mb
        median = statistics.median
        print(
            f"{'side':<22}{'docs/s':>9}{'vs snippet':>12}{'peak MB':>10}{'plain generate vs snippet':>28}"
            f"{'vs plain':>10}"
        )
        print(f"{'reference snippet':<22}{median(snippet_rates):>9.2f}{1.0:>12.2f}{snippet_mb:>10.0f}")
        for batch in args.batch_sizes:
            print(
                f"{'extract_batch b=' + str(batch):<22}{median(rates[batch]):>9.2f}{median(ratio[batch]):>12.2f}"
                f"{memory[batch]:>10.0f}{median(ceiling[batch]):>28.2f}{median(versus_plain[batch]):>10.2f}"
            )


if __name__ == "__main__":
    main()
