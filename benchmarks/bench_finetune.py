"""Fine-tuning speed of `invoice_vlm.finetune` against a plain TRL script, measured side by side in one run.

    python benchmarks/bench_finetune.py [--family paligemma|idefics3|gemma3|qwen_vl|florence2] [--docs 16] [--epochs 2]
                                        [--batch-size 4] [--rounds 2] [--vocab 257216] [--image-size 448]

Both sides train the same small random model of the family (built offline: 224 px, 4 vision and 4 text layers,
width 256) on the same generated pallet labels with the same settings: LoRA r=8 on the language model's attention
and MLP projections, frozen vision tower, AdamW at 2e-4, the same batch size, epochs and seed, and the same collator
(PaliGemma: the processor called with ``suffix=``; chat families and Florence-2: `ChatCollator`, labels on the target
only; Florence-2's LoRA on its BART-style projections, ``q/k/v/out_proj`` and ``fc1/fc2``, and its loss the
decoder's: TRL 1.16's ``SFTTrainer`` computes its loss with a fused LM head made for decoder-only models, which
fails on Florence-2, so the plain script overrides ``compute_loss`` with the model's own loss). Qwen-VL needs torchvision (run it in the ``families`` nox session's environment) and both sides get the
small model's own page budget. The plain script is what a user would write with TRL alone: ``SFTTrainer`` with
``remove_unused_columns=False`` and ``skip_prepare_dataset``. Ours adds its guards on the first batch, its data
validation and its output directory. Samples per second are the trainer's own (``train_samples_per_second``:
training steps only, for both). Rounds alternate which side goes first; medians are reported. The target is a ratio of at least
0.95.

A third side is ours with ``answer_only_logits=False``: the output layer on every position (image and prompt tokens
too), as a plain forward computes it; the default runs it only where the loss is taken (goal: at least 1.3x the
samples/s of full logits). ``--vocab 257216`` gives the
model PaliGemma's real output vocabulary (the embeddings resized; the tokenizer stays small), where that layer is a
large share of the compute. Peak memory is the resident memory above the start of each run (CUDA's own peak on a GPU).
Logits MB is the largest output the output layer wrote in one forward pass (what the loss then reads; TRL's fused
head writes its logits tile by tile, outside that layer, so it shows none). ``--image-size 448`` (PaliGemma only)
gives the pages PaliGemma-3B-448's 1,024 image tokens, so the share of positions that carry the loss is a real
sample's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from _common import IMAGE_OPTIONS, SMALL, PeakMemory, build_small_model

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def targets(family_name: str) -> list[str]:
    """The projections LoRA adapts on both sides: the family's own names where they differ (Florence-2's BART)."""
    from invoice_vlm.families import get_family

    return list(get_family(family_name).lora_targets) or LORA_TARGETS


def plain_trl(model_dir: Path, data: Any, args: argparse.Namespace, out: Path) -> float:
    """The plain TRL script: load, wrap in LoRA, train with SFTTrainer; returns train samples/s."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from invoice_vlm.families import get_family
    from invoice_vlm.finetune import ChatCollator, PaliGemmaCollator

    torch.manual_seed(args.seed)
    family = get_family(args.family)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    prompt = "extract Document data in JSON format"
    if family.prompt_style == "prefix":
        collator: Any = PaliGemmaCollator(processor, prompt)
    else:
        chat = ChatCollator(processor, prompt, family, image_options=IMAGE_OPTIONS.get(args.family))

        def collator(rows: Any) -> Any:  # without the images and cut flags our trainer's guards read
            batch = chat(rows)
            del batch["guard_images"], batch["truncated"]
            return batch

    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=rf".*{family.language_model}.*\.({'|'.join(targets(args.family))})",
        task_type="SEQ_2_SEQ_LM" if family.encoder_decoder else "CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    config = SFTConfig(
        output_dir=str(out),
        num_train_epochs=args.epochs,
        learning_rate=2e-4,
        per_device_train_batch_size=args.batch_size,
        warmup_steps=0.03,
        lr_scheduler_type="linear",
        logging_steps=10,
        seed=args.seed,
        report_to="none",
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
        max_length=None,
        save_strategy="epoch",  # checkpoints every epoch, as ours keeps them to resume from
        save_total_limit=2,
        activation_checkpointing=False,
        eval_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        bf16=torch.cuda.is_available(),
    )
    trainer_class: Any = SFTTrainer
    if family.encoder_decoder:
        # TRL 1.16's SFTTrainer takes its loss from a fused LM head built for decoder-only models (it fails on
        # Florence-2's decoder); the plain script overrides compute_loss with the model's own loss, as TRL suggests.
        class Seq2SeqSFTTrainer(SFTTrainer):  # type: ignore[misc]
            def compute_loss(
                self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
            ) -> Any:
                outputs = model(**inputs)
                return (outputs.loss, outputs) if return_outputs else outputs.loss

        trainer_class = Seq2SeqSFTTrainer
    trainer = trainer_class(
        model=model,
        args=config,
        train_dataset=data["train"],
        data_collator=collator,
        processing_class=processor,
    )
    return float(trainer.train().metrics["train_samples_per_second"])


def ours(
    model_dir: Path, data_dir: Path, args: argparse.Namespace, out: Path, answer_only: bool = True
) -> float:
    from invoice_vlm.finetune import FinetuneConfig, finetune

    result = finetune(
        FinetuneConfig(
            base_model=str(model_dir),
            data=str(data_dir),
            schema="pallet_label",
            output_dir=str(out),
            num_train_epochs=args.epochs,
            per_device_train_batch_size=args.batch_size,
            lora_targets=targets(args.family),
            seed=args.seed,
            image_options=IMAGE_OPTIONS.get(args.family),
            answer_only_logits=answer_only,
        )
    )
    return float(result.metrics["train_samples_per_second"])


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
    parser.add_argument("--docs", type=int, default=16, help="training documents (default: 16)")
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs per run (default: 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="per-device batch size (default: 4)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per side (default: 4)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    parser.add_argument(
        "--vocab",
        type=int,
        default=None,
        help="resize the output vocabulary to this size (default: the tiny one)",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=SMALL["image_size"],
        help=f"PaliGemma's page size in pixels, 14-px patches (default: {SMALL['image_size']}; 448: 1,024 image tokens)",
    )
    args = parser.parse_args()
    if args.image_size != SMALL["image_size"] and args.family != "paligemma":
        parser.error(
            "--image-size sets PaliGemma's page size; the other families have their own page budgets"
        )

    import torch

    from invoice_vlm.data import load
    from invoice_vlm.data.synth import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sizes = {"image_size": args.image_size} if args.family == "paligemma" else {}
        model_dir = build_small_model(root, args.family, **sizes)
        data_dir = root / "data"
        write_dataset("pallet_label", args.docs, data_dir, split=(1.0, 0.0, 0.0), seed=args.seed)
        data = load(data_dir, schema="pallet_label")
        print(
            f"{args.family}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"cuda={torch.cuda.is_available()}"
        )
        print(f"{args.docs} documents x {args.epochs} epochs, batch {args.batch_size}, rounds {args.rounds}")
        if args.vocab:
            model_dir = resized(model_dir, args.vocab)
        size = args.vocab or "the tiny tokenizer's"
        pixels = f"; pages of {args.image_size} px" if args.family == "paligemma" else ""
        print(f"output vocabulary: {size}{pixels}")
        vocab = int(_output_layer(model_dir).out_features)

        def full_logits(model: Path, source: Any, a: argparse.Namespace, out: Path) -> float:
            return ours(model, source, a, out, answer_only=False)

        sides = [
            ("plain TRL script", plain_trl, data),
            ("invoice_vlm.finetune", ours, data_dir),
            ("ours, full logits", full_logits, data_dir),
        ]
        runs: dict[str, list[float]] = {side: [] for side, _, _ in sides}
        peaks: dict[str, list[float]] = {side: [] for side, _, _ in sides}
        logits: dict[str, float] = {side: 0.0 for side, _, _ in sides}
        for r in range(args.rounds):  # alternating: neither side always runs first
            for side, train, source in sides if r % 2 == 0 else sides[::-1]:
                with PeakMemory() as peak, LogitsSize(vocab) as size:
                    runs[side].append(
                        train(model_dir, source, args, root / f"{side.split()[0]}{len(runs[side])}{r}")
                    )
                peaks[side].append(peak.peak_mb)
                logits[side] = max(logits[side], size.largest_mb)
        base = statistics.median(runs["plain TRL script"])
        full = statistics.median(runs["ours, full logits"])
        print(
            f"{'side':<24}{'samples/s':>11}{'vs plain':>10}{'vs full logits':>16}{'peak MB':>10}{'logits MB':>11}"
        )
        for side, values in runs.items():
            value = statistics.median(values)
            shown = f"{logits[side]:.0f}" if logits[side] else "-"
            print(
                f"{side:<24}{value:>11.3f}{value / base:>10.3f}{value / full:>16.3f}"
                f"{statistics.median(peaks[side]):>10.0f}{shown:>11}"
            )
        ours_mb, full_mb = logits["invoice_vlm.finetune"], logits["ours, full logits"]
        if ours_mb:
            print(f"logits memory, full over answer-only: {full_mb / ours_mb:.2f}x (goal: at least 3x)")


class LogitsSize:
    """The largest output any ``vocab``-wide linear layer (the output layer) writes in one call, in MB."""

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab
        self.largest_mb = 0.0

    def __enter__(self) -> LogitsSize:
        import torch

        def record(module: Any, _inputs: Any, output: Any) -> None:
            if isinstance(module, torch.nn.Linear) and module.out_features == self.vocab:
                self.largest_mb = max(self.largest_mb, output.numel() * output.element_size() / 2**20)

        self._handle = torch.nn.modules.module.register_module_forward_hook(record)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def _output_layer(model_dir: Path) -> Any:
    """The saved model's output layer (read once, for its width)."""
    import torch
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    return model.get_output_embeddings()


def resized(model_dir: Path, vocab: int) -> Path:
    """A copy of the model whose (tied) embeddings and output layer have ``vocab`` rows."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model.resize_token_embeddings(vocab, mean_resizing=False)
    out = model_dir.parent / f"model-{vocab}"
    model.save_pretrained(out)
    AutoProcessor.from_pretrained(model_dir).save_pretrained(out)
    return out


if __name__ == "__main__":
    main()
