"""The default backend: PaliGemma with transformers, plus a PEFT LoRA adapter when given.

Decoding is greedy and, when the ``constrained`` extra (xgrammar) is installed, constrained to the schema: each row of
a batch has its own grammar matcher, the grammar is compiled once per schema and tokenizer, and the probability of
every chosen token is taken after the mask, during generation (one number per token, never the vocabulary's scores).

torch, transformers and peft are imported inside the functions that need them, so registering this backend (which
happens whenever any backend is looked up) stays cheap; loading goes through the shared plumbing in
``invoice_vlm.backends._hf``.

Example:
    >>> # ex = InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448",
    >>> #                                       adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label")
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends import Generation, GenerationRequest
from invoice_vlm.backends._hf import (
    apply_adapter,
    has_processor,
    load_processor,
    load_weights,
    resolve_device_dtype,
    resolve_refs,
)
from invoice_vlm.config import GenerationSettings, from_dict
from invoice_vlm.constraints import SEPARATORS
from invoice_vlm.errors import MissingDependencyError, ModelLoadError, require

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_TOKEN",
    "PaliGemmaBackend",
    "build_prompt",
    "char_confidence",
    "has_processor",
    "resolve_device_dtype",
]

IMAGE_TOKEN = "<image>"


def build_prompt(prompt: str) -> str:
    """The text given to the processor: the image token, then the prompt exactly as trained.

    The processor itself expands the image token, inserts ``<bos>`` after it and ends the prefix with a newline, so
    nothing else is added here; a training collator must use this same function.
    """
    return IMAGE_TOKEN + prompt


def char_confidence(
    tokenizer: Any, ids: Sequence[int], probs: Sequence[float]
) -> tuple[str, tuple[float, ...]]:
    """The text of ``ids`` and one probability per character: that of the token that completed the character.

    Decoding is incremental (a short window, as streaming detokenizers do), so the cost is linear in the number of
    tokens; a character that needs several tokens (a byte-fallback sequence) gets the lowest of their probabilities.
    """
    text: str = tokenizer.decode(list(ids), skip_special_tokens=True)
    pieces: list[str] = []
    scores: list[float] = []
    prefix, read = 0, 0
    low = 1.0
    for i, p in enumerate(probs):
        low = min(low, float(p))
        before = tokenizer.decode(list(ids[prefix:read]), skip_special_tokens=True)
        after = tokenizer.decode(list(ids[prefix : i + 1]), skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            delta = after[len(before) :]
            pieces.append(delta)
            scores.extend([low] * len(delta))
            prefix, read, low = read, i + 1, 1.0
    if (
        "".join(pieces) != text
    ):  # a tokenizer whose pieces do not add up: one score per token's prefix, exactly
        scores = []
        for i, p in enumerate(probs):
            upto = (
                len(tokenizer.decode(list(ids[: i + 1]), skip_special_tokens=True))
                if i + 1 < len(ids)
                else len(text)
            )
            scores.extend([float(p)] * max(0, upto - len(scores)))
    scores = scores[: len(text)] + [float(probs[-1]) if len(probs) else 1.0] * (len(text) - len(scores))
    return text, tuple(min(1.0, max(0.0, c)) for c in scores)


class _Grammars:
    """Compiled grammars of one tokenizer, one per JSON schema, compiled once (xgrammar)."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: Sequence[int]) -> None:
        import xgrammar

        info = xgrammar.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids)
        )
        self.compiler = xgrammar.GrammarCompiler(info)
        self.vocab_size = vocab_size
        self._compiled: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, json_schema: Any) -> Any:
        key = json.dumps(json_schema, sort_keys=False)
        with self._lock:
            if key not in self._compiled:
                self._compiled[key] = self.compiler.compile_json_schema(
                    key, any_whitespace=False, separators=SEPARATORS, strict_mode=True
                )
            return self._compiled[key]


def _logits_processor(grammar: Any, batch: int, vocab_size: int) -> Any:
    """A processor that masks each row to its grammar (when given) and keeps the chosen token's probability."""
    import torch
    from transformers import LogitsProcessor

    class ChosenProbability(LogitsProcessor):  # type: ignore[misc]
        """Last in the list, so what it sees is what greedy decoding picks from: it records that token's probability."""

        def __init__(self) -> None:
            self.probs: list[list[float]] = [[] for _ in range(batch)]
            self.matchers: list[Any] = []
            self.bitmask: Any = None
            self.started = False
            if grammar is not None:
                import xgrammar

                self.matchers = [xgrammar.GrammarMatcher(grammar) for _ in range(batch)]
                self.bitmask = xgrammar.allocate_token_bitmask(batch, vocab_size)

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.matchers:
                import xgrammar

                if self.started:
                    for row, matcher in enumerate(self.matchers):
                        if not matcher.is_terminated():
                            matcher.accept_token(int(input_ids[row, -1]))
                self.started = True
                for row, matcher in enumerate(self.matchers):
                    if not matcher.is_terminated():
                        matcher.fill_next_token_bitmask(self.bitmask, row)
                    else:
                        self.bitmask[row].fill_(-1)  # a finished row: nothing masked (its tokens are padding)
                if scores.device.type == "cuda":
                    xgrammar.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
                else:
                    masked = scores.to("cpu", torch.float32)
                    xgrammar.apply_token_bitmask_inplace(masked, self.bitmask)
                    scores = masked.to(scores.device, scores.dtype)  # type: ignore[assignment]
            best = scores.float().max(-1).values
            chosen = torch.exp(best - torch.logsumexp(scores.float(), -1)).tolist()
            for row, p in enumerate(chosen):
                self.probs[row].append(p)
            return scores

    return ChosenProbability()


class PaliGemmaBackend:
    """PaliGemma (transformers) with an optional PEFT adapter; batched greedy generation, constrained when asked.

    Args:
        model: a loaded ``PaliGemmaForConditionalGeneration`` (or a ``PeftModel`` around one).
        processor: the matching ``PaliGemmaProcessor``.
        device: where the model lives.
        generation: default decoding settings (an extractor's request carries the ones used).
        base_model: id or path of the base weights (saved in ``invoice_vlm.json``).
        adapter: id or path of the adapter applied, if any.
    """

    name = "paligemma"

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        device: str = "cpu",
        generation: GenerationSettings | None = None,
        base_model: str | None = None,
        adapter: str | None = None,
    ) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.generation = generation or GenerationSettings()
        self.base_model = base_model
        self.adapter = adapter
        self._grammars: _Grammars | None = None

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | Any | None = None,
        generation: GenerationSettings | dict[str, Any] | None = None,
        **options: Any,
    ) -> PaliGemmaBackend:
        """Load a base model (id or directory), an adapter alone (its base read from ``adapter_config.json``), or both.

        Only safetensors weights are loaded and ``trust_remote_code`` is never set. ``generation`` sets the backend's
        default decoding settings (an extractor's own settings override them).

        Raises:
            MissingDependencyError: torch/transformers/peft are not installed.
            ModelLoadError: the model, adapter or processor cannot be loaded; the message says which and why.
        """
        if options:
            raise TypeError(
                f"PaliGemmaBackend.from_pretrained got unexpected option(s): {', '.join(sorted(options))}"
            )
        require("The PaliGemma backend", "paligemma", "torch", "transformers", "peft")
        if model is None and adapter is None:
            raise ModelLoadError(
                "The paligemma backend needs a model: a base id such as 'google/paligemma-3b-pt-448', an adapter "
                "id or directory, or a directory saved by invoice_vlm."
            )
        if isinstance(generation, dict):
            generation = from_dict(GenerationSettings, generation, where="generation settings")
        resolved_device, torch_dtype = resolve_device_dtype(device, dtype)  # cheap checks before any loading
        refs = resolve_refs(model, adapter)
        processor = load_processor(refs.processor)
        if not hasattr(processor, "image_seq_length"):
            raise ModelLoadError(
                f"{refs.processor!r} has a {type(processor).__name__}, not a PaliGemma processor.",
                refs.processor,
            )
        from transformers import PaliGemmaForConditionalGeneration

        net = load_weights(PaliGemmaForConditionalGeneration, refs.base, resolved_device, torch_dtype)
        if refs.adapter is not None:
            net = apply_adapter(net, refs.adapter, trainable=False, base=refs.base)
        net.eval()
        vocab = net.get_input_embeddings().weight.shape[0]
        if len(processor.tokenizer) > vocab:
            raise ModelLoadError(
                f"The tokenizer of {refs.processor!r} has {len(processor.tokenizer)} tokens but the model "
                f"{refs.base!r} embeds only {vocab}; the processor does not belong to this model."
            )
        return cls(
            net,
            processor,
            device=resolved_device,
            generation=generation,
            base_model=refs.base,
            adapter=refs.adapter,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.model.parameters()).dtype  # type: ignore[no-any-return]

    @property
    def constrained_decoding(self) -> bool:
        """Whether decoding can be constrained to a schema here: xgrammar (the ``constrained`` extra) is installed."""
        return importlib.util.find_spec("xgrammar") is not None

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        found = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        found.add(self.processor.tokenizer.eos_token_id)
        return sorted(i for i in found if i is not None)

    def _grammar(self, json_schema: Any) -> Any:
        if self._grammars is None:
            if not self.constrained_decoding:
                raise MissingDependencyError("Constrained decoding", "constrained", "xgrammar")
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            self._grammars = _Grammars(self.processor.tokenizer, vocab, self._eos_ids())
        return self._grammars.get(json_schema)

    def generate(self, images: Sequence[Image.Image], request: GenerationRequest) -> list[Generation]:
        """Greedy-decode one output per image, constrained to the schema when asked, with per-character confidence.

        Confidence is the probability of each chosen token after the grammar's mask (one number per token, taken
        as it is generated), spread over the characters the token completes.
        """
        import torch

        if not images:
            return []
        settings = request.settings
        if request.constrained and settings.num_beams != 1:
            raise ValueError("constrained decoding works with greedy decoding only (num_beams=1).")
        text = build_prompt(request.prompt)
        inputs = self.processor(images=list(images), text=[text] * len(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        prefix_len = inputs["input_ids"].shape[1]
        tokenizer = self.processor.tokenizer
        processors = []
        recorder = None
        if settings.num_beams == 1:
            grammar = self._grammar(request.json_schema) if request.constrained else None
            vocab = int(self.model.get_output_embeddings().weight.shape[0])
            recorder = _logits_processor(grammar, len(images), vocab)
            processors.append(recorder)
        from transformers import LogitsProcessorList

        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                min_new_tokens=settings.min_new_tokens or None,
                num_beams=settings.num_beams,
                do_sample=False,
                logits_processor=LogitsProcessorList(processors),
                pad_token_id=tokenizer.pad_token_id,
            )
        sequences = out[:, prefix_len:].tolist()
        eos = set(self._eos_ids())
        results = []
        for row, ids in enumerate(sequences):
            cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
            ids = ids[:cut]
            if recorder is None:
                results.append(Generation(tokenizer.decode(ids, skip_special_tokens=True), num_tokens=cut))
                continue
            decoded, confidence = char_confidence(tokenizer, ids, recorder.probs[row][:cut])
            results.append(Generation(decoded, char_confidence=confidence, num_tokens=cut))
        return results

    def save_pretrained(self, directory: str | Path) -> None:
        """Save the adapter (or the full model when none is applied) and the processor, as safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.processor.save_pretrained(str(directory))
