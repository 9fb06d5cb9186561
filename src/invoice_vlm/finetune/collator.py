"""Training collators: prompt exactly as inference sends it, JSON target after it, labels on the target only.

`ChatCollator` serves the chat-template families (Idefics3/SmolVLM, Gemma 3). `PaliGemmaCollator` serves PaliGemma:
TRL's built-in vision collator does not pass ``suffix=``, so it cannot build PaliGemma's prefix-LM inputs; this one
calls the processor with ``text=`` prompts (built by the same `build_prompt` the backend uses at inference),
``images=`` and ``suffix=`` targets; the processor appends ``<eos>`` to every target, marks prefix tokens with
``token_type_ids == 0`` and target tokens with 1, and masks the prefix out of the labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from invoice_vlm.backends.paligemma import build_prompt
from invoice_vlm.backends.vlm import model_inputs
from invoice_vlm.errors import InvoiceVLMWarning
from invoice_vlm.families import Family

__all__ = ["ChatCollator", "PaliGemmaCollator"]


class _CutTargets:
    """Counts and warns (once per collator) about targets cut to ``max_length``."""

    max_length: int | None
    truncated_rows: int
    _warned: bool

    def _warn_cut(self, cut: list[bool]) -> None:
        if not any(cut):
            return
        self.truncated_rows += sum(cut)
        if not self._warned:
            warnings.warn(
                f"{sum(cut)} target(s) in this batch are longer than max_length={self.max_length} and were cut "
                "(the model will not learn their ends); raise max_length or shorten the targets.",
                InvoiceVLMWarning,
                stacklevel=3,
            )
            self._warned = True


class PaliGemmaCollator(_CutTargets):
    """Turn dataset rows (``image``, ``target``) into a PaliGemma training batch.

    Args:
        processor: the model's ``PaliGemmaProcessor``.
        prompt: the prompt every row is trained with (the same text inference will send).
        max_length: when set, targets longer than fits are cut from the end (the image and prompt never are); the
            number of cut rows is counted in ``truncated_rows`` and warned about.
    """

    def __init__(self, processor: Any, prompt: str, max_length: int | None = None) -> None:
        self.processor = processor
        self.prompt = prompt
        self.max_length = max_length
        self.truncated_rows = 0
        self._warned = False

    def _fit_targets(self, targets: list[str]) -> tuple[list[str], list[bool]]:
        if self.max_length is None:
            return targets, [False] * len(targets)
        tokenizer = self.processor.tokenizer
        prefix_len = (
            self.processor.image_seq_length
            + 2
            + len(tokenizer(self.prompt, add_special_tokens=False)["input_ids"])
        )
        room = self.max_length - prefix_len - 1  # one place for <eos>
        if room < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for a target after {prefix_len} image and prompt tokens."
            )
        fitted, cut = [], []
        for target in targets:
            ids = tokenizer(target, add_special_tokens=False)["input_ids"]
            if len(ids) > room:
                fitted.append(tokenizer.decode(ids[:room]))
                cut.append(True)
            else:
                fitted.append(target)
                cut.append(False)
        return fitted, cut

    def __call__(self, examples: Sequence[dict[str, Any]]) -> Any:
        """Build ``input_ids``, ``attention_mask``, ``token_type_ids``, ``pixel_values`` and ``labels``."""
        images = [ex["image"].convert("RGB") for ex in examples]
        targets, cut = self._fit_targets([ex["target"] for ex in examples])
        self._warn_cut(cut)
        batch = self.processor(
            text=[build_prompt(self.prompt)] * len(examples),
            images=images,
            suffix=targets,
            return_tensors="pt",
            padding="longest",
            padding_side="right",
        )
        batch["truncated"] = cut  # read by the guards, removed before the model sees the batch
        return batch


class ChatCollator(_CutTargets):
    """Turn dataset rows (``image``, ``target``) into a training batch for a chat-template family.

    For Idefics3/SmolVLM, Gemma 3...: the inference prompt's tokens, then the target's tokens and the end token.

    The prompt part is built by `~invoice_vlm.backends.vlm.model_inputs`, the very function inference feeds
    ``generate`` with, so training and inference prompts agree token for token (the image tiles included); the
    target is tokenised on its own (the tokens the model writes after the prompt) and ends with the family's end
    token (``<end_of_utterance>``, ``<end_of_turn>``...), which is where generation stops. Labels are -100 on every
    prompt, image and padding token; rows are padded on the right.

    Args:
        processor: the model's processor.
        prompt: the prompt every row is trained with (the same text inference will send).
        family: the model's `~invoice_vlm.families.Family`.
        max_length: when set, targets longer than fits are cut from the end (the image and prompt never are),
            counted in ``truncated_rows`` and warned about.
        image_options: the image processor settings inference uses (the family's document defaults when ``None``).
    """

    def __init__(
        self,
        processor: Any,
        prompt: str,
        family: Family,
        max_length: int | None = None,
        image_options: dict[str, Any] | None = None,
    ) -> None:
        self.processor = processor
        self.prompt = prompt
        self.family = family
        self.max_length = max_length
        self.image_options = dict(family.image_options) if image_options is None else dict(image_options)
        self.truncated_rows = 0
        self._warned = False

    def __call__(self, examples: Sequence[dict[str, Any]]) -> Any:
        """Build ``input_ids``, ``attention_mask``, the family's per-token inputs, the image tensors and ``labels``."""
        import torch
        from transformers import BatchFeature

        images = [ex["image"] for ex in examples]
        prompts = model_inputs(self.family, self.processor, images, self.prompt, self.image_options)
        tokenizer = self.processor.tokenizer
        end = self.family.target_end_id(tokenizer)
        if self.family.encoder_decoder:
            return self._encoder_decoder(examples, images, prompts, end)
        ids = prompts["input_ids"]
        per_token = [
            k for k, v in prompts.items() if hasattr(v, "shape") and tuple(v.shape) == tuple(ids.shape)
        ]
        rows: list[dict[str, list[int]]] = []
        cut: list[bool] = []
        for row, example in enumerate(examples):
            live = prompts["attention_mask"][row].bool()
            target = tokenizer(example["target"], add_special_tokens=False)["input_ids"]
            prompt_len = int(live.sum())
            target, was_cut = self._fit(target, prompt_len)
            cut.append(was_cut)
            target = [*target, end]
            rows.append(
                {key: [*prompts[key][row][live].tolist(), *_target_fill(key, target)] for key in per_token}
                | {"labels": [-100] * prompt_len + target}
            )
        self._warn_cut(cut)
        width = max(len(row["labels"]) for row in rows)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        pads = {"input_ids": pad_id, "labels": -100}
        batch = {
            key: torch.tensor(
                [row[key] + [pads.get(key, 0)] * (width - len(row[key])) for row in rows], dtype=torch.long
            )
            for key in [*per_token, "labels"]
        }
        batch.update({k: v for k, v in prompts.items() if k not in per_token})
        out = BatchFeature(batch)
        out["truncated"] = cut  # read by the guards, removed before the model sees the batch
        out["guard_images"] = images  # the guards rebuild each row's inference prompt from them
        return out

    def _fit(self, target: list[int], prompt_len: int) -> tuple[list[int], bool]:
        """The target cut to what ``max_length`` leaves after ``prompt_len`` tokens and the end token; whether cut."""
        if self.max_length is None:
            return target, False
        room = self.max_length - prompt_len - 1  # one place for the end token
        if room < 1:
            raise ValueError(
                f"max_length={self.max_length} leaves no room for a target after {prompt_len} image and prompt tokens."
            )
        return target[:room], len(target) > room

    def _encoder_decoder(
        self, examples: Sequence[dict[str, Any]], images: list[Any], prompts: Any, end: int
    ) -> Any:
        """An encoder-decoder batch (Florence-2): the inference prompt for the encoder, the target as the labels.

        The model builds the decoder's inputs from the labels (its start token, then the labels shifted right), as
        generation starts from that start token.
        """
        import torch
        from transformers import BatchFeature

        tokenizer = self.processor.tokenizer
        targets, cut = [], []
        for example in examples:
            ids = tokenizer(example["target"], add_special_tokens=False)["input_ids"]
            fitted, was_cut = self._fit(ids, 0)  # the decoder holds the target alone
            targets.append([*fitted, end])
            cut.append(was_cut)
        self._warn_cut(cut)
        width = max(len(t) for t in targets)
        out = BatchFeature(dict(prompts))
        out["labels"] = torch.tensor([t + [-100] * (width - len(t)) for t in targets], dtype=torch.long)
        out["truncated"] = cut
        out["guard_images"] = images
        return out


def _target_fill(key: str, target: list[int]) -> list[int]:
    """What a per-token input holds over the target: its tokens, attention on, and 0 in token-type inputs."""
    if key == "input_ids":
        return target
    if key == "attention_mask":
        return [1] * len(target)
    return [0] * len(target)
