"""The full PaliGemma-3B-448 architecture with random weights on one GPU: fine-tuning and extraction throughput.

    python benchmarks/bench_gpu.py [--train-steps 30] [--train-batch 8] [--tokens 64] [--batch-sizes 1 2 4 8 16 32]
    python benchmarks/bench_gpu.py --jump-forward [--docs 8] [--rounds 3] [--batch-sizes 1 8] [--learning-rate 5e-3]
    python benchmarks/bench_gpu.py --reduced [...]   # the same code on a tiny configuration, on the CPU (CI runs it)

No download: the model is PaliGemma-3B-448's architecture (SigLIP So400m/14 at 448 px, 1024 image tokens; Gemma-2B,
257,216-token vocabulary) with random weights, saved once and then loaded exactly as a user's model is. The tokenizer
is a small one trained on the spot (token ids fit the large vocabulary), which changes nothing the GPU computes per
token.

Fine-tuning: `invoice_vlm.finetune` (LoRA r=8 on the language model, frozen vision tower, bf16, gradient
checkpointing off) on generated pallet labels; samples/s from the trainer, model FLOPs utilisation from the FLOPs a
sample needs (vision tower forward, language model forward and backward through the frozen weights) over the GPU's
dense bf16 peak, and the ratio to the reference run's 2.78 samples/s on one L40S; then the same run computing every
position's logits (``answer_only_logits=False``), for the samples/s and peak-memory ratios of answer-only logits. Extraction: `extract_batch` at each
batch size, exactly ``--tokens`` tokens per page, images/s and peak GPU memory. Finishes in under 8 minutes on one
H200 with the defaults.

``--jump-forward`` measures jump-forward decoding instead, on realistic outputs (a random model's text under the
grammar runs its strings to their bounds, and differs between modes): the same architecture, its small tokenizer
trained on invoices (so pallet-label keys take several tokens each, as in a real vocabulary), is fine-tuned (LoRA)
until it memorises ``--docs`` generated pallet labels, then reads them unconstrained, constrained token by token,
and with jump-forward, at each of ``--batch-sizes`` (default 1 8). Every mode must write the memorised labels, else
no ratio is printed; the report gives seconds and forward passes per label, and unconstrained over jump-forward
seconds per round and their median (the CPU goals were 1.3x at batch 1 and 1.15x at batch 8). Not yet run on a GPU:
how long memorising takes there, and whether it does at ``--learning-rate``, the report says (``memorised_at_step``
is null when it did not).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import PeakMemory, jump_forward_rounds, memorisable, memorise, pages

REFERENCE_SAMPLES_PER_S = 2.78  # the reference card's LoRA run on one L40S
PEAK_BF16_TFLOPS = {"H200": 989.5, "H100": 989.5, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}

FULL = {
    "vision": {
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
    },
    "text": {
        "hidden_size": 2048,
        "intermediate_size": 16384,
        "num_hidden_layers": 18,
        "num_attention_heads": 8,
    },
    "image_size": 448,
    "patch_size": 14,
    "head_dim": 256,
    "vocab_size": 257_216,
}
REDUCED = {
    "vision": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2},
    "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 2},
    "image_size": 112,
    "patch_size": 14,
    "head_dim": 64,
    "vocab_size": 4096,
    # At width 128 the tied output layer's logits are near flat from 0.02 (the tiny test models' reason for 0.3):
    # LoRA alone could not make it memorise for --jump-forward. At width 2,048 they are not.
    "initializer_range": 0.3,
}


def build(folder: Path, arch: dict, device: str, schemas: list[str] | None = None) -> tuple[Path, int, int]:
    """Save a random model of ``arch`` with a small tokenizer (trained on ``schemas``' documents, default all);
    returns its folder, vision and language parameters."""
    import torch
    from transformers import AutoProcessor, PaliGemmaConfig, PaliGemmaForConditionalGeneration

    from invoice_vlm.testing import build_tiny_paligemma

    small = build_tiny_paligemma(
        folder / "tokenizer", image_size=arch["image_size"], patch_size=arch["patch_size"], schemas=schemas
    )
    processor = AutoProcessor.from_pretrained(small)
    tokenizer = processor.tokenizer
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "image_size": arch["image_size"],
            "patch_size": arch["patch_size"],
            "vision_use_head": False,
            **arch["vision"],
        },
        text_config={
            "model_type": "gemma",
            "num_key_value_heads": 1,
            "head_dim": arch["head_dim"],
            "vocab_size": arch["vocab_size"],
            "max_position_embeddings": 8192,
            "initializer_range": arch.get("initializer_range", 0.02),
            **arch["text"],
        },
        image_token_index=processor.image_token_id,
        vocab_size=arch["vocab_size"],
        projection_dim=arch["text"]["hidden_size"],
        hidden_size=arch["text"]["hidden_size"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = PaliGemmaForConditionalGeneration(config).to(dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    vision = sum(p.numel() for n, p in model.named_parameters() if "vision_tower" in n)
    language = sum(p.numel() for n, p in model.named_parameters() if "language_model" in n)
    out = folder / "model"
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out, vision, language


def finetune_run(
    model_dir: Path,
    folder: Path,
    args: argparse.Namespace,
    vision: int,
    language: int,
    *,
    answer_only: bool = True,
) -> dict:
    import torch

    from invoice_vlm.data import load
    from invoice_vlm.data.synth import write_dataset
    from invoice_vlm.finetune import FinetuneConfig, finetune

    docs = args.train_steps * args.train_batch
    data_dir = folder / "data"
    if not data_dir.exists():
        write_dataset("pallet_label", docs, data_dir, split=(1.0, 0.0, 0.0), seed=1)
    out = folder / ("out" if answer_only else "out_full_logits")
    with PeakMemory() as peak:
        result = finetune(
            FinetuneConfig(
                base_model=str(model_dir),
                data=str(data_dir),
                schema="pallet_label",
                output_dir=str(out),
                num_train_epochs=1,
                per_device_train_batch_size=args.train_batch,
                logging_steps=max(1, args.train_steps // 3),
                answer_only_logits=answer_only,
            )
        )
    samples_s = float(result.metrics["train_samples_per_second"])
    image_tokens = (args_arch(args)["image_size"] // args_arch(args)["patch_size"]) ** 2
    rows = load(data_dir, schema="pallet_label")["train"]
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(model_dir).tokenizer
    text_tokens = sum(len(tokenizer(t)["input_ids"]) for t in rows["target"]) / len(rows) + 12
    sequence = image_tokens + text_tokens
    # Frozen vision tower: forward only (2 FLOPs a weight a token); language model: forward and the backward through
    # frozen weights (activation gradients: another 2), LoRA's own weights are negligible.
    flops = 2 * vision * image_tokens + 4 * language * sequence
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    bf16 = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return {
        "device": name,
        "train_samples_per_s": round(samples_s, 3),
        "vs_reference_L40S": round(samples_s / REFERENCE_SAMPLES_PER_S, 3),
        "model_tflops_per_sample": round(flops / 1e12, 4),
        "mfu": round(samples_s * flops / (bf16 * 1e12), 4) if bf16 else None,
        "peak_mb": round(peak.peak_mb),
    }


def extraction_runs(model_dir: Path, args: argparse.Namespace) -> list[dict]:
    from invoice_vlm import InvoiceExtractor

    settings = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens}
    ex = InvoiceExtractor.from_pretrained(
        model_dir, schema="pallet_label", generation=settings, constrained=False, evidence=False
    )
    rows = []
    for batch in args.batch_sizes:
        images = pages(max(batch * 2, 4), size=args_arch(args)["image_size"])
        ex.extract_batch(images[:batch], batch_size=batch, progress=False)  # warm up this shape
        with PeakMemory() as peak:
            start = time.perf_counter()
            ex.extract_batch(images, batch_size=batch, progress=False)
            seconds = time.perf_counter() - start
        rows.append(
            {"batch": batch, "images_per_s": round(len(images) / seconds, 3), "peak_mb": round(peak.peak_mb)}
        )
    return rows


def described(args: argparse.Namespace, vision: int, language: int) -> dict:
    """What a report starts with: the architecture and its parameter counts."""
    return {
        "architecture": "reduced" if args.reduced else "PaliGemma-3B-448",
        "parameters": {"vision_tower": vision, "language_model": language},
    }


def throughput_run(folder: Path, args: argparse.Namespace, device: str) -> dict:
    """Fine-tuning with answer-only and with full logits, then extraction at each batch size."""
    model_dir, vision, language = build(folder, args_arch(args), device)
    report = {
        **described(args, vision, language),
        "finetune": finetune_run(model_dir, folder, args, vision, language),
        "finetune_full_logits": finetune_run(model_dir, folder, args, vision, language, answer_only=False),
        "extract": extraction_runs(model_dir, args),
    }
    answer_only, full = report["finetune"], report["finetune_full_logits"]
    report["answer_only_logits"] = {
        "samples_per_s_ratio": round(answer_only["train_samples_per_s"] / full["train_samples_per_s"], 3),
        "peak_memory_ratio": round(full["peak_mb"] / max(answer_only["peak_mb"], 1), 3),
    }
    return report


def jump_forward_run(folder: Path, args: argparse.Namespace, device: str) -> dict:
    """Memorise ``--docs`` pallet labels, then time the three decoding modes on them (see the module's docstring)."""
    model_dir, vision, language = build(folder, args_arch(args), device, schemas=["invoice"])
    data = memorisable(folder / "labels", args.docs, "pallet_label")
    out = folder / "memorised"
    start = time.perf_counter()
    at = memorise(model_dir, data, "pallet_label", out, args.docs, args.learning_rate)
    report: dict = {
        "docs": args.docs,
        "learning_rate": args.learning_rate,
        "memorised_at_step": at,
        "memorise_seconds": round(time.perf_counter() - start, 1),
    }
    if at is not None:
        report["batches"] = jump_forward_rounds(out, data, "pallet_label", args.batch_sizes, args.rounds)
    return {**described(args, vision, language), "jump_forward": report}


def args_arch(args: argparse.Namespace) -> dict:
    return REDUCED if args.reduced else FULL


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-steps", type=int, default=30, help="training steps, one epoch (default: 30)")
    parser.add_argument("--train-batch", type=int, default=8, help="training batch size (default: 8)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens generated per page (default: 64)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", help="(default: 1 2 4 8 16 32; with --jump-forward: 1 8)"
    )
    parser.add_argument(
        "--reduced", action="store_true", help="a tiny configuration, for the CPU (default: off)"
    )
    parser.add_argument(
        "--jump-forward",
        action="store_true",
        help="measure jump-forward decoding instead (see above; default: off)",
    )
    parser.add_argument(
        "--docs", type=int, default=8, help="labels memorised for --jump-forward (default: 8)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per mode for --jump-forward (default: 3)"
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=5e-3,
        help="LoRA learning rate for --jump-forward (default: 5e-3)",
    )
    args = parser.parse_args()
    if args.batch_sizes is None:
        args.batch_sizes = [1, 8] if args.jump_forward else [1, 2, 4, 8, 16, 32]

    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.reduced:
        raise SystemExit("no CUDA GPU here: run with --reduced to check the benchmark on the CPU")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        report = (jump_forward_run if args.jump_forward else throughput_run)(Path(tmp), args, device)
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
