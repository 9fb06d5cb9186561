"""The PaliGemma training collator: prompt as prefix, JSON target as suffix, exactly as inference sends it.

TRL's built-in vision collator does not pass ``suffix=``, so it cannot build PaliGemma's prefix-LM inputs. This one
calls the processor with ``text=`` prompts (built by the same `build_prompt` the backend uses at inference),
``images=`` and ``suffix=`` targets; the processor appends ``<eos>`` to every target, marks prefix tokens with
``token_type_ids == 0`` and target tokens with 1, and masks the prefix out of the labels.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from invoice_vlm.backends.paligemma import build_prompt
from invoice_vlm.errors import InvoiceVLMWarning

__all__ = ["PaliGemmaCollator"]


class PaliGemmaCollator:
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
        if any(cut):
            self.truncated_rows += sum(cut)
            if not self._warned:
                warnings.warn(
                    f"{sum(cut)} target(s) in this batch are longer than max_length={self.max_length} and were cut "
                    "(the model will not learn their ends); raise max_length or shorten the targets.",
                    InvoiceVLMWarning,
                    stacklevel=2,
                )
                self._warned = True
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
