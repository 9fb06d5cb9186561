"""Checks on the first training batch that stop a run which would silently learn the wrong thing.

Each failure raises `GuardError` naming the check:

- ``token_type_ids``: present and shaped like ``input_ids`` (without them PaliGemma trains fully causal instead
  of prefix-LM).
- ``labels``: -100 on every image and prompt token and on padding; equal to the input tokens on every target token.
- ``eos``: every target ends with the EOS token (a transformers release once dropped it; the model then never learns
  to stop). Rows cut by ``max_length`` are exempt and were warned about.
- ``image_tokens``: each row has exactly the processor's ``image_seq_length`` image tokens.
- ``prompt``: the prompt tokens are those of the prompt the run saves in ``invoice_vlm.json``.

Chat-template families (`check_chat_batch`) get the same checks against each row's prompt rebuilt from its image by
inference's own code, and every family gets `check_lora_scope`: LoRA layers only in the language model.
"""

from __future__ import annotations

from typing import Any

from invoice_vlm.backends.paligemma import build_prompt
from invoice_vlm.backends.vlm import model_inputs
from invoice_vlm.errors import GuardError
from invoice_vlm.families import Family

__all__ = ["check_attention", "check_batch", "check_chat_batch", "check_lora_scope"]


def check_attention(model: Any, family: Family | None = None) -> None:
    """Refuse FlashAttention-2 where a family's mask is not causal (PaliGemma's prefix-LM, Gemma 3's image tokens)."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None) if config is not None else None
    text_impl = getattr(getattr(config, "text_config", None), "_attn_implementation", None)
    if "flash_attention_2" in (impl, text_impl):
        raise GuardError(
            "attention",
            f"the model uses flash_attention_2, which loses {_noncausal(family)}; load it with "
            "attn_implementation='sdpa' or 'eager'.",
        )


def _noncausal(family: Family | None) -> str:
    if family is None or family.prompt_style == "prefix":
        return "PaliGemma's prefix-LM mask (image and prompt would attend causally)"
    return f"{family.title}'s bidirectional attention among image tokens"


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


def check_chat_batch(
    batch: dict[str, Any],
    processor: Any,
    prompt: str,
    family: Family,
    images: list[Any],
    truncated: list[bool] | None = None,
    image_options: dict[str, Any] | None = None,
) -> None:
    """Every check on a chat-template family's batch, against prompts rebuilt from its images by inference's code.

    Each row must start with exactly the tokens `~invoice_vlm.backends.vlm.model_inputs` gives that row's image
    (the inference prompt, image tokens included), hold -100 labels on them and on padding, labels equal to the
    tokens on the target, and end its target with the family's end token.

    Raises:
        GuardError: the first check that fails, saying what is wrong and what to do.
    """
    input_ids = batch["input_ids"]
    labels = batch.get("labels")
    mask = batch.get("attention_mask")
    if labels is None:
        raise GuardError("labels", "the batch has no labels.")
    if batch.get("pixel_values") is None:
        raise GuardError(
            "image_tokens", "the batch has no pixel_values: the model would train without the page."
        )
    missing = [key for key in family.token_inputs if batch.get(key) is None]
    if missing:
        raise GuardError(
            missing[0],
            f"the batch has no {missing[0]}, which {family.title} needs (image tokens attend both ways); use "
            "invoice_vlm's ChatCollator and keep remove_unused_columns=False.",
        )
    tokenizer = processor.tokenizer
    end_id = family.target_end_id(tokenizer)
    image_id = getattr(processor, "image_token_id", None)
    if len(images) != input_ids.shape[0]:
        raise GuardError("prompt", f"{len(images)} images for {input_ids.shape[0]} rows.")
    options = dict(family.image_options) if image_options is None else image_options
    if family.encoder_decoder:
        _check_encoder_decoder(batch, processor, prompt, family, images, truncated, options)
        return
    for row in range(input_ids.shape[0]):
        expected = model_inputs(family, processor, [images[row]], prompt, options)["input_ids"][0].tolist()
        ids = input_ids[row].tolist()
        lab = labels[row].tolist()
        live = mask[row].tolist() if mask is not None else [1] * len(ids)
        if ids[: len(expected)] != expected:
            raise GuardError(
                "prompt",
                f"row {row} does not start with the inference prompt's tokens for its image (it reads "
                f"{tokenizer.decode([t for t in ids[: len(expected)] if t != image_id])!r}, inference sends "
                f"{tokenizer.decode([t for t in expected if t != image_id])!r}); training and inference prompts must "
                "be identical.",
            )
        n_image = ids[: len(expected)].count(image_id)
        if image_id is None or n_image == 0 or n_image != ids.count(image_id):
            raise GuardError(
                "image_tokens",
                f"row {row} has {ids.count(image_id)} image tokens, {n_image} of them in its prompt; the image "
                "would not reach the model as at inference.",
            )
        for pos, (tok, lb, lv) in enumerate(zip(ids, lab, live, strict=True)):
            if (pos < len(expected) or not lv) and lb != -100:
                raise GuardError(
                    "labels",
                    f"row {row} position {pos} is image, prompt or padding but its label is {lb}, not -100.",
                )
            if pos >= len(expected) and lv and lb != tok:
                raise GuardError(
                    "labels", f"row {row} position {pos} is a target token {tok} but its label is {lb}."
                )
        target = [lb for lb in lab if lb != -100]
        if not target:
            raise GuardError("labels", f"row {row} has no target tokens to learn.")
        if not (truncated and truncated[row]) and target[-1] != end_id:
            raise GuardError(
                "eos",
                f"row {row}'s target ends with {tokenizer.decode(target[-3:])!r}, not the end token "
                f"{tokenizer.convert_ids_to_tokens(end_id)!r}; the model would never learn to stop.",
            )


def _check_encoder_decoder(
    batch: dict[str, Any],
    processor: Any,
    prompt: str,
    family: Family,
    images: list[Any],
    truncated: list[bool] | None,
    options: dict[str, Any],
) -> None:
    """The encoder's tokens are inference's prompt; the labels are the target, then the end token, then -100."""
    tokenizer = processor.tokenizer
    end_id = family.target_end_id(tokenizer)
    image_id = getattr(processor, "image_token_id", None)
    mask = batch.get("attention_mask")
    for row in range(batch["input_ids"].shape[0]):
        expected = model_inputs(family, processor, [images[row]], prompt, options)["input_ids"][0].tolist()
        ids = batch["input_ids"][row].tolist()
        live = mask[row].tolist() if mask is not None else [1] * len(ids)
        given = [t for t, lv in zip(ids, live, strict=True) if lv]
        if given != expected:
            raise GuardError(
                "prompt",
                f"row {row}'s encoder input is not the inference prompt's tokens for its image (it reads "
                f"{tokenizer.decode([t for t in given if t != image_id])!r}, inference sends "
                f"{tokenizer.decode([t for t in expected if t != image_id])!r}).",
            )
        if image_id is None or given.count(image_id) == 0:
            raise GuardError(
                "image_tokens", f"row {row} has no image tokens; the page would not reach the model."
            )
        labels = batch["labels"][row].tolist()
        target = [lb for lb in labels if lb != -100]
        if not target:
            raise GuardError("labels", f"row {row} has no target tokens to learn.")
        if labels[: len(target)] != target:
            raise GuardError(
                "labels", f"row {row}'s labels have -100 inside the target; padding goes at the end only."
            )
        if not (truncated and truncated[row]) and target[-1] != end_id:
            raise GuardError(
                "eos",
                f"row {row}'s target ends with {tokenizer.decode(target[-3:])!r}, not the end token "
                f"{tokenizer.convert_ids_to_tokens(end_id)!r}; the model would never learn to stop.",
            )


def check_lora_scope(model: Any, family: Family, train_vision_tower: bool) -> None:
    """Refuse LoRA layers outside the language model: vLLM serves the language model's adapters only.

    Raises:
        GuardError: a LoRA layer in the vision tower (unless asked) or in any other part of the model.
    """
    outside = [
        name
        for name, _ in model.named_modules()
        if name.endswith(".lora_A")
        and not family.in_language_model(name)
        and not (train_vision_tower and family.in_vision(name))
    ]
    if outside:
        raise GuardError(
            "lora_scope",
            f"LoRA layers outside {family.title}'s language model ({outside[0].removesuffix('.lora_A')} and "
            f"{len(outside) - 1} more): vLLM would drop them and serve another model than was trained. Name "
            "language-model projections in lora_targets.",
        )
