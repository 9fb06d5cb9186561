"""`FinetuneConfig`: every fine-tuning setting, documented, loadable from YAML or JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from invoice_vlm.config import from_dict
from invoice_vlm.errors import ConfigError, MissingDependencyError

__all__ = ["DEFAULT_LORA_TARGETS", "FinetuneConfig"]

DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The language model's attention and MLP projections."""

Method = Literal["lora", "qlora", "full"]


@dataclass
class FinetuneConfig:
    """How to fine-tune. The defaults are a LoRA recipe for PaliGemma-3B on a few hundred documents.

    Why these defaults: LoRA r=8 / alpha=16 on the language model's attention and MLP projections only (the vision
    tower and projector stay frozen, so a small document set cannot wreck the image encoder); learning rate 2e-4 with a
    3% warm-up and linear decay, the usual LoRA rate; 3 epochs and batch 4, what a few hundred labels of one template
    need; evaluation and checkpoints once per epoch with the best checkpoint chosen by field accuracy on the
    validation split (not by loss, which does not see a wrong digit).

    Examples:
        >>> cfg = FinetuneConfig(base_model="google/paligemma-3b-pt-448", data="data/pallets",
        ...                      schema="pallet_label", output_dir="out/pallets")
    """

    base_model: str = field(
        metadata={"help": "Base PaliGemma id or directory, e.g. google/paligemma-3b-pt-448."}
    )
    data: str = field(
        metadata={"help": "Dataset that invoice_vlm.data.load reads (Roboflow, Donut, saved HF dataset)."}
    )
    schema: str = field(metadata={"help": "Registered schema the targets must satisfy."})
    output_dir: str = field(
        metadata={"help": "Where the adapter, processor, invoice_vlm.json and model card go."}
    )
    prompt: str | None = field(
        default=None,
        metadata={"help": "Prompt after the image; default: the schema's. The data's prefixes must match."},
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "Continue training this adapter (directory or id) instead of a new one."},
    )
    method: Method = field(
        default="lora", metadata={"help": "lora, qlora (4-bit base, needs CUDA + bitsandbytes) or full."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_targets: list[str] = field(
        default_factory=lambda: list(DEFAULT_LORA_TARGETS),
        metadata={"help": "Projection names adapted inside the language model."},
    )
    train_vision_tower: bool = field(
        default=False, metadata={"help": "Also adapt the vision tower (LoRA) or train it (full)."}
    )
    train_projector: bool = field(default=False, metadata={"help": "Also train the multi-modal projector."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Passes over the training split."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Documents per step on each device."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Steps summed before each update."})
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "Share of steps spent warming up the learning rate."}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"help": "Recompute activations to save memory (turn on for 3B models on 24 GB)."},
    )
    dataloader_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes preparing batches; default: 0 on the CPU (the training uses every core), "
            "min(4, cores // 2) on a GPU, where decoding images in parallel keeps it busy."
        },
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "Cap on prefix + target tokens; longer targets are cut (never the image or prompt), with a warning."
        },
    )
    eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate every N steps; default: at the end of every epoch."}
    )
    save_steps: int | None = field(
        default=None, metadata={"help": "Save a checkpoint every N steps; default: as often as evaluation."}
    )
    save_total_limit: int = field(
        default=2, metadata={"help": "Checkpoints kept (the best one is always kept)."}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after N evaluations without a better field accuracy."}
    )
    eval_max_documents: int | None = field(
        default=64, metadata={"help": "Validation documents generated at each evaluation (all when empty)."}
    )
    image_options: dict[str, Any] | None = field(
        default=None,
        metadata={
            "help": "Image processor settings to train and read pages with, saved with the model, as JSON "
            '(e.g. {"size": {"longest_edge": 1003520}} for Qwen-VL); default: the model family\'s document '
            "settings."
        },
    )
    answer_only_logits: bool = field(
        default=True,
        metadata={
            "help": "Run the output layer only where the loss is taken (the target's tokens), not on the image and "
            "prompt tokens, whose logits are thrown away: the same loss and gradients, less compute and memory. "
            "False computes every position's logits, as a plain forward does."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Log the loss every N steps."})
    seed: int = field(default=42, metadata={"help": "Random seed for initialisation and data order."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={"help": "A checkpoint directory, or 'latest' for the newest in output_dir/checkpoints."},
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the result to the Hugging Face Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for push_to_hub."})
    report_to: list[str] = field(
        default_factory=list,
        metadata={"help": "Experiment trackers (wandb, tensorboard...); none by default."},
    )
    device: str | None = field(default=None, metadata={"help": "cuda or cpu; default: cuda when available."})
    on_error: str = field(
        default="raise",
        metadata={
            "help": "Bad dataset rows: 'raise' lists them all and stops, 'skip' drops them with a count."
        },
    )

    def __post_init__(self) -> None:
        problems = []
        for key in ("base_model", "data", "schema", "output_dir"):
            if not getattr(self, key):
                problems.append(f"{key} is required")
        if self.on_error not in ("raise", "skip"):
            problems.append(f"on_error must be raise or skip, got {self.on_error!r}")
        if self.method not in ("lora", "qlora", "full"):
            problems.append(f"method must be lora, qlora or full, got {self.method!r}")
        for key in (
            "lora_r",
            "lora_alpha",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
        ):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                problems.append(f"{key} must be a positive integer, got {value!r}")
        for key in ("num_train_epochs", "learning_rate"):
            if not isinstance(getattr(self, key), (int, float)) or getattr(self, key) <= 0:
                problems.append(f"{key} must be positive, got {getattr(self, key)!r}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if isinstance(self.image_options, str):  # from the command line or a config file, as JSON
            try:
                self.image_options = json.loads(self.image_options)
            except json.JSONDecodeError as exc:
                problems.append(f"image_options must be a JSON object, got {self.image_options!r} ({exc})")
        if self.image_options is not None and not isinstance(self.image_options, dict):
            problems.append(f"image_options must be a JSON object, got {self.image_options!r}")
        if not 0 <= self.lora_dropout < 1:
            problems.append(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.push_to_hub and not self.hub_model_id:
            problems.append("push_to_hub needs hub_model_id")
        if isinstance(self.lora_targets, str):
            self.lora_targets = [t.strip() for t in self.lora_targets.split(",") if t.strip()]
        if isinstance(self.report_to, str):
            self.report_to = (
                [] if self.report_to in ("", "none") else [t.strip() for t in self.report_to.split(",")]
            )
        if problems:
            raise ConfigError("Invalid fine-tuning config: " + "; ".join(problems) + ".")

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> FinetuneConfig:
        """Read a YAML (``.yaml``/``.yml``) or JSON file; ``overrides`` replace its values (unknown keys warn)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"Config file {file} does not exist.", path=file) from None
        if file.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise MissingDependencyError("YAML configs", "train", "pyyaml") from None
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{file} is not valid YAML: {exc}", path=file) from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{file} is not valid JSON: {exc}", path=file) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{file} must hold a mapping of settings.", path=file)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return from_dict(cls, data, where=str(file))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (saved next to the adapter)."""
        return dataclasses.asdict(self)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Field name -> help text, for CLIs and docs."""
        return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}
