"""The model card (``README.md``) written next to a fine-tuned adapter."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoice_vlm.config import package_version
from invoice_vlm.families import Family
from invoice_vlm.schemas import SchemaSpec

if TYPE_CHECKING:
    from invoice_vlm.evaluation import EvaluationReport
    from invoice_vlm.finetune.config import FinetuneConfig

__all__ = ["model_card"]


def model_card(
    config: FinetuneConfig,
    spec: SchemaSpec,
    prompt: str,
    splits: dict[str, int],
    metrics: dict[str, float],
    report: EvaluationReport | None,
    longest_target_tokens: int,
    max_new_tokens: int,
    family: Family | None = None,
) -> str:
    """Markdown with front matter: evaluation table, training settings, dataset summary, usage."""
    lines = [
        "---",
        f"base_model: {config.base_model}",
        "library_name: peft" if config.method != "full" else "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        f"tags: [invoice-vlm, {family.name if family else 'paligemma'}, document-extraction, {config.method}]",
        "---",
        "",
        f"# {spec.name} extractor fine-tuned from {config.base_model}",
        "",
        f"Fine-tuned with invoice-vlm {package_version()} ({config.method}) from a "
        f"{family.title if family else 'PaliGemma'} model. It reads a document image and writes JSON "
        f"that validates against the `{spec.name}` schema (version {spec.version}).",
        "",
        "## Evaluation",
        "",
    ]
    if report is not None:
        split = report.info.get("split", "test")
        m = report.metrics
        lines += [
            f"On the `{split}` split ({report.num_documents} documents), generated with greedy decoding:",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| field accuracy | {m['field_accuracy']:.4f} |",
            f"| document accuracy | {m['document_accuracy']:.4f} |",
            f"| nTED accuracy | {m['ted_accuracy']:.4f} |",
            f"| field F1 | {m['field_f1']:.4f} |",
            f"| schema-valid outputs | {m['schema_valid_rate']:.4f} |",
            f"| BLEU | {m['bleu']:.4f} |",
            f"| TER | {m['ter']:.2f} |",
            "",
            "Per-field accuracy and every failing field are in `evaluation/report.md`.",
        ]
    else:
        lines.append("The data had no validation or test split, so no evaluation was run.")
    lines += [
        "",
        "## Training",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    shown = (
        "method",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_targets",
        "train_vision_tower",
        "train_projector",
        "num_train_epochs",
        "learning_rate",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "warmup_ratio",
        "weight_decay",
        "gradient_checkpointing",
        "max_length",
        "seed",
    )
    settings = config.to_dict()
    for key in shown:
        lines.append(f"| {key} | `{settings[key]}` |")
    for key in ("train_runtime", "train_samples_per_second", "train_loss", "global_step"):
        if key in metrics:
            lines.append(f"| {key} | {metrics[key]:.4g} |")
    lines += [
        "",
        "## Data",
        "",
        f"- Source: `{config.data}`; splits: " + ", ".join(f"{k} {v}" for k, v in splits.items()),
        f"- Prompt (saved in `invoice_vlm.json`, used at inference): `{prompt}`",
        f"- Longest target: {longest_target_tokens} tokens; generation stops at {max_new_tokens} new tokens.",
        "",
        "## Usage",
        "",
        "```python",
        "from invoice_vlm import InvoiceExtractor",
        "",
        'ex = InvoiceExtractor.from_pretrained("path/to/this/directory")  # schema and prompt come from invoice_vlm.json',
        'result = ex.extract("document.jpg")',
        "print(result.valid, result.to_dict())",
        "```",
        "",
    ]
    return "\n".join(lines)
