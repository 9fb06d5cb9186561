"""Fine-tune PaliGemma with LoRA, QLoRA or fully, over TRL's ``SFTTrainer``, guarded against training the wrong thing.

Examples:
    >>> from invoice_vlm.finetune import FinetuneConfig, finetune
    >>> cfg = FinetuneConfig(base_model="google/paligemma-3b-pt-448", data="data/pallets",
    ...                      schema="pallet_label", output_dir="out/pallets")
    >>> # result = finetune(cfg); result.metrics["field_accuracy"]
"""

from __future__ import annotations

from invoice_vlm.finetune.collator import ChatCollator, PaliGemmaCollator
from invoice_vlm.finetune.config import DEFAULT_LORA_TARGETS, FinetuneConfig
from invoice_vlm.finetune.guards import check_attention, check_batch, check_chat_batch, check_lora_scope
from invoice_vlm.finetune.train import FinetuneResult, finetune, lora_target_regex

__all__ = [
    "DEFAULT_LORA_TARGETS",
    "ChatCollator",
    "FinetuneConfig",
    "FinetuneResult",
    "PaliGemmaCollator",
    "check_attention",
    "check_batch",
    "check_chat_batch",
    "check_lora_scope",
    "finetune",
    "lora_target_regex",
]
