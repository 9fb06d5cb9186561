"""Checks on the first training batch that stop a run which would silently learn the wrong thing.

Each failure raises `GuardError` naming the check:

- ``token_type_ids``: present and shaped like ``input_ids`` (without them PaliGemma trains fully causal instead
  of prefix-LM).
- ``labels``: -100 on every image and prompt token and on padding; equal to the input tokens on every target token.
- ``eos``: every target ends with the EOS token (a transformers release once dropped it; the model then never learns
  to stop). Rows cut by ``max_length`` are exempt and were warned about.
- ``image_tokens``: each row has exactly the processor's ``image_seq_length`` image tokens.
- ``prompt``: the prompt tokens are those of the prompt the run saves in ``invoice_vlm.json``.
"""

from __future__ import annotations

from typing import Any

from invoice_vlm.backends.paligemma import build_prompt
from invoice_vlm.errors import GuardError

__all__ = ["check_attention", "check_batch"]


def check_attention(model: Any) -> None:
    """Refuse FlashAttention-2: it ignores PaliGemma's prefix-LM mask, so image and prompt would attend causally."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None) if config is not None else None
    text_impl = getattr(getattr(config, "text_config", None), "_attn_implementation", None)
    if "flash_attention_2" in (impl, text_impl):
        raise GuardError(
            "attention",
            "the model uses flash_attention_2, which loses PaliGemma's prefix-LM mask; load it with "
            "attn_implementation='sdpa' or 'eager'.",
        )


def check_batch(
    batch: dict[str, Any], processor: Any, prompt: str, truncated: list[bool] | None = None
) -> None:
    """Run every check on a batch as the model receives it.

    Raises:
        GuardError: the first check that fails, saying what is wrong and what to do.
    """
    if "token_type_ids" not in batch or batch["token_type_ids"] is None:
        raise GuardError(
            "token_type_ids",
            "the batch reaching the model has no token_type_ids, so PaliGemma would train fully causal instead of "
            "prefix-LM. Use invoice_vlm's PaliGemmaCollator (or return the processor's token_type_ids) and keep "
            "remove_unused_columns=False.",
        )
    input_ids = batch["input_ids"]
    token_types = batch["token_type_ids"]
    labels = batch.get("labels")
    mask = batch.get("attention_mask")
    if tuple(token_types.shape) != tuple(input_ids.shape):
        raise GuardError(
            "token_type_ids",
            f"token_type_ids {tuple(token_types.shape)} != input_ids {tuple(input_ids.shape)}.",
        )
    if labels is None:
        raise GuardError("labels", "the batch has no labels; pass suffix= targets to the processor.")
    tokenizer = processor.tokenizer
    image_id = processor.image_token_id
    eos_id = tokenizer.eos_token_id
    expected_prefix = processor(images=[_blank()], text=[build_prompt(prompt)], return_tensors="pt")[
        "input_ids"
    ][0].tolist()
    for row in range(input_ids.shape[0]):
        ids = input_ids[row].tolist()
        types = token_types[row].tolist()
        lab = labels[row].tolist()
        live = mask[row].tolist() if mask is not None else [1] * len(ids)
        n_image = ids.count(image_id)
        if n_image != processor.image_seq_length:
            raise GuardError(
                "image_tokens",
                f"row {row} has {n_image} image tokens, the processor's image_seq_length is {processor.image_seq_length}.",
            )
        prefix = [t for t, ty, lv in zip(ids, types, live, strict=True) if ty == 0 and lv]
        if prefix != expected_prefix:
            raise GuardError(
                "prompt",
                f"row {row}'s prefix decodes to {tokenizer.decode(prefix)!r}, not the run's prompt {prompt!r} "
                "(the prompt saved in invoice_vlm.json); training and inference prompts must be identical.",
            )
        for pos, (tok, ty, lb, lv) in enumerate(zip(ids, types, lab, live, strict=True)):
            if (ty == 0 or not lv) and lb != -100:
                raise GuardError(
                    "labels",
                    f"row {row} position {pos} is image, prompt or padding but its label is {lb}, not -100.",
                )
            if ty == 1 and lv and lb != tok:
                raise GuardError(
                    "labels", f"row {row} position {pos} is a target token {tok} but its label is {lb}."
                )
        target = [lb for lb in lab if lb != -100]
        if not target:
            raise GuardError("labels", f"row {row} has no target tokens to learn.")
        if not (truncated and truncated[row]) and target[-1] != eos_id:
            raise GuardError(
                "eos",
                f"row {row}'s target ends with {tokenizer.decode(target[-3:])!r}, not the EOS token "
                f"{tokenizer.eos_token!r}; the model would never learn to stop.",
            )


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (32, 32), "white")
