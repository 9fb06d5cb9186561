"""A stand-in for vllm on CPU: vllm's public classes as the vllm backend uses them, and an engine that really decodes.

``install(monkeypatch)`` puts it in ``sys.modules`` in vllm's place. The engine (`LLM`) follows vLLM 0.33 where the
backend depends on it, and refuses what vLLM refuses:

- it builds PaliGemma's prompt as ``vllm/model_executor/models/paligemma.py`` does: the image tokens and ``<bos>``
  inserted after a leading ``<bos>`` when the engine's tokenizer adds one (``add_bos_token``), else at the start, and
  ``vocab["\\n"]`` appended when the prompt does not end with it;
- for the chat families it applies vLLM's prompt update to token inputs: the model's one image placeholder
  (`PLACEHOLDERS`) is replaced by the image block the model's own HF processor (loaded from the model directory, as
  vLLM loads it) builds for that image with the request's ``mm_processor_kwargs``; no placeholder, or several, is
  vLLM's error;
- LoRA: only when started with ``enable_lora``, up to ``max_lora_rank``, refusing the adapter features vLLM's loader
  refuses (``modules_to_save``, DoRA...);
- structured outputs: one kind of constraint; a ``grammar`` is compiled by xgrammar and masks every step;
- log-probabilities: ``logprobs=0`` returns the chosen token's, after the mask (``processed_logprobs``);
- the returned ``token_ids`` include the stop token; ``text`` does not.

Decoding runs the model with transformers (float32), one prompt at a time, greedy.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

import torch

ENGINE_ARGS = {
    "dtype",
    "seed",
    "limit_mm_per_prompt",
    "logprobs_mode",
    "structured_outputs_config",
    "enable_lora",
    "max_loras",
    "max_lora_rank",
    "enable_tower_connector_lora",
    "gpu_memory_utilization",
    "max_model_len",
    "tensor_parallel_size",
    "max_num_seqs",
    "enforce_eager",
}
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
PLACEHOLDERS = {"idefics3": "<image>", "gemma3": "<start_of_image>", "qwen_vl": "<|image_pad|>"}
"""The token vLLM's processor for each chat family replaces with the image block (its ``PromptReplacement`` target)."""


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    outputs: list[CompletionOutput]
    finished: bool = True


@dataclass
class StructuredOutputsParams:
    json: str | dict | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:
        count = sum(
            v is not None for v in (self.json, self.regex, self.choice, self.grammar, self.json_object)
        )
        if count != 1:
            raise ValueError(f"You must use exactly one kind of structured outputs constraint, got {count}.")


class SamplingParams:
    def __init__(
        self,
        temperature: float = 1.0,
        max_tokens: int | None = 16,
        min_tokens: int = 0,
        logprobs: int | None = None,
        stop_token_ids: list[int] | None = None,
        skip_special_tokens: bool = True,
        structured_outputs: StructuredOutputsParams | None = None,
        seed: int | None = None,
    ) -> None:
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.logprobs = logprobs
        self.stop_token_ids = stop_token_ids or []
        self.skip_special_tokens = skip_special_tokens
        self.structured_outputs = structured_outputs
        self.seed = seed


@dataclass
class LoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str = ""
    base_model_name: str | None = None

    def __post_init__(self) -> None:
        if self.lora_int_id < 1:
            raise ValueError(f"id must be > 0, got {self.lora_int_id}")
        assert self.lora_path, "lora_path cannot be empty"


@dataclass
class Platform:
    device_name: str = "cuda"
    cuda: bool = True

    def is_cuda_alike(self) -> bool:
        return self.cuda


@dataclass
class _Calls:
    """What the engine was asked, for tests to read."""

    engines: list[LLM] = field(default_factory=list)


CALLS = _Calls()


class LLM:
    def __init__(self, model: str, tokenizer: str | None = None, **kwargs: Any) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

        from invoice_vlm.families import family_for_model_type

        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got unexpected keyword arguments {sorted(unknown)}")
        if kwargs.get("max_lora_rank", 16) not in LORA_RANKS:
            raise ValueError(f"max_lora_rank must be one of {LORA_RANKS}")
        self.model_path = model
        self.kwargs = kwargs
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer or model)
        self.processor = AutoProcessor.from_pretrained(model)
        self.image_processor = self.processor.image_processor
        self.base = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).eval()
        self.family = family_for_model_type(self.base.config.model_type)
        self._loras: dict[int, Any] = {}
        self.requests: list[tuple[list[Any], SamplingParams, LoRARequest | None]] = []
        CALLS.engines.append(self)

    def _prompt(self, prompt: dict[str, Any]) -> list[int]:
        """The prompt's tokens as vLLM lays them out for the model (its image block expanded)."""
        tokenizer = self.tokenizer
        if "prompt_token_ids" in prompt:
            ids = list(prompt["prompt_token_ids"])
        else:
            ids = tokenizer.encode(prompt["prompt"], add_special_tokens=False)
        if self.family.name != "paligemma":
            at, block = self._placeholder(ids), self._block(prompt)
            return ids[:at] + list(block["input_ids"][0]) + ids[at + 1 :]
        # PaliGemma: image tokens + <bos> inserted after the tokenizer's own <bos>, "\\n" at the end.
        config = self.base.config
        vision = config.vision_config
        image = [config.image_token_index] * ((vision.image_size // vision.patch_size) ** 2)
        add_bos = tokenizer.add_bos_token
        assert isinstance(add_bos, bool)
        prefix = [tokenizer.bos_token_id] if add_bos else []
        if ids[: len(prefix)] != prefix:
            raise RuntimeError("Expected there to be 1 prompt placeholders corresponding to 1 image items")
        ids = ids[: len(prefix)] + image + [tokenizer.bos_token_id] + ids[len(prefix) :]
        newline = tokenizer.get_vocab()["\n"]
        if ids[-1] != newline:
            ids.append(newline)
        return ids

    def _placeholder(self, ids: list[int]) -> int:
        """Where the one image placeholder is (vLLM's error when there is none, or several)."""
        token = self.tokenizer.convert_tokens_to_ids(PLACEHOLDERS[self.family.name])
        found = [i for i, t in enumerate(ids) if t == token]
        if len(found) != 1:
            raise RuntimeError(
                f"Expected there to be 1 prompt placeholders corresponding to 1 image items, got {len(found)}"
            )
        return found[0]

    def _block(self, prompt: dict[str, Any]) -> Any:
        """The HF processor's image block (and image tensors) for the prompt's image and ``mm_processor_kwargs``."""
        image = prompt["multi_modal_data"]["image"]
        return self.processor(
            text=[PLACEHOLDERS[self.family.name]],
            images=[[image.convert("RGB")]],
            add_special_tokens=False,
            return_tensors="pt",
            **prompt.get("mm_processor_kwargs", {}),
        )

    def _image_inputs(self, prompt: dict[str, Any], ids: list[int]) -> dict[str, Any]:
        """The model's image inputs for the laid-out prompt ``ids``, per-token ones at the image block's place."""
        image = prompt["multi_modal_data"]["image"]
        if self.family.name == "paligemma":
            return {"pixel_values": self.image_processor(images=[image], return_tensors="pt")["pixel_values"]}
        block = self._block(prompt)
        width = int(block["input_ids"].shape[1])
        at = next(i for i in range(len(ids)) if ids[i : i + width] == block["input_ids"][0].tolist())
        inputs = {key: value for key, value in block.items() if key not in ("input_ids", "attention_mask")}
        for key in ("token_type_ids", "mm_token_type_ids"):
            if key in inputs:
                full = torch.zeros(1, len(ids), dtype=inputs[key].dtype)
                full[:, at : at + width] = inputs[key]
                inputs[key] = full
        return inputs

    def _model(self, lora: LoRARequest | None) -> Any:
        if lora is None:
            return self.base
        if not self.kwargs.get("enable_lora"):
            raise ValueError("LoRA is not enabled; start the engine with enable_lora=True")
        if lora.lora_int_id not in self._loras:
            import json
            from pathlib import Path

            from peft import PeftModel
            from transformers import AutoModelForImageTextToText

            config = json.loads((Path(lora.lora_path) / "adapter_config.json").read_text())
            if [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]:
                raise ValueError("vLLM only supports modules_to_save being either None or classifier/score")
            if config.get("use_dora"):
                raise ValueError("vLLM does not yet support DoRA.")
            if int(config["r"]) > self.kwargs.get("max_lora_rank", 16):
                raise ValueError(f"LoRA rank {config['r']} is greater than max_lora_rank")
            towers = (*self.family.vision, *self.family.projector)
            if any(t in str(config.get("target_modules")) for t in towers) and not self.kwargs.get(
                "enable_tower_connector_lora"
            ):
                raise ValueError(
                    "this adapter targets the vision tower: start with enable_tower_connector_lora"
                )
            base = AutoModelForImageTextToText.from_pretrained(self.model_path, dtype=torch.float32)
            self._loras[lora.lora_int_id] = PeftModel.from_pretrained(base, lora.lora_path).eval()
        return self._loras[lora.lora_int_id]

    def generate(
        self,
        prompts: Any,
        sampling_params: SamplingParams | None = None,
        *,
        use_tqdm: bool = True,
        lora_request: LoRARequest | None = None,
    ) -> list[RequestOutput]:
        params = sampling_params or SamplingParams()
        prompts = prompts if isinstance(prompts, list) else [prompts]
        self.requests.append((prompts, params, lora_request))
        model = self._model(lora_request)
        return [self._one(str(n), prompt, params, model) for n, prompt in enumerate(prompts)]

    def _one(
        self, request_id: str, prompt: dict[str, Any], params: SamplingParams, model: Any
    ) -> RequestOutput:
        from transformers import LogitsProcessor, LogitsProcessorList

        if params.temperature != 0.0:
            raise AssertionError("this fake engine decodes greedily only")
        ids = self._prompt(prompt)
        image_inputs = self._image_inputs(prompt, ids)
        vocab = int(self.base.get_output_embeddings().weight.shape[0])
        stops = sorted({*params.stop_token_ids, self.tokenizer.eos_token_id})
        matcher = bitmask = None
        if params.structured_outputs is not None:
            import xgrammar

            assert params.structured_outputs.grammar is not None, "the backend sends grammars"
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=vocab, stop_token_ids=stops
            )
            compiled = xgrammar.GrammarCompiler(info).compile_grammar(params.structured_outputs.grammar)
            matcher = xgrammar.GrammarMatcher(compiled)
            bitmask = xgrammar.allocate_token_bitmask(1, vocab)
        chosen: list[float] = []

        class Mask(LogitsProcessor):  # type: ignore[misc]
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                if matcher is not None:
                    import xgrammar

                    if len(chosen):
                        matcher.accept_token(int(input_ids[0, -1]))
                    matcher.fill_next_token_bitmask(bitmask, 0)
                    scores = scores.float()
                    xgrammar.apply_token_bitmask_inplace(scores, bitmask)
                chosen.append(float(torch.log_softmax(scores.float(), -1).max()))
                return scores

        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                **image_inputs,
                max_new_tokens=params.max_tokens,
                min_new_tokens=params.min_tokens or None,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=self.tokenizer.pad_token_id,
                logits_processor=LogitsProcessorList([Mask()]),
            )
        new = out[0, len(ids) :].tolist()
        end = next((i + 1 for i, t in enumerate(new) if t in stops), len(new))
        new = new[:end]
        finish = "stop" if new and new[-1] in stops else "length"
        logprobs = None
        if params.logprobs is not None:
            logprobs = [{token: Logprob(chosen[i], rank=1)} for i, token in enumerate(new)]
        text = self.tokenizer.decode(new, skip_special_tokens=params.skip_special_tokens)
        completion = CompletionOutput(0, text, new, sum(chosen[: len(new)]), logprobs, finish)
        return RequestOutput(request_id, None, ids, [completion])


def install(monkeypatch: Any, *, cuda: bool = True) -> types.ModuleType:
    """Put this fake in ``sys.modules`` as ``vllm`` (and the submodules the backend imports)."""
    import importlib.machinery

    def module(name: str, **attributes: Any) -> types.ModuleType:
        made = types.ModuleType(name)
        made.__spec__ = importlib.machinery.ModuleSpec(name, None)
        made.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, name, made)
        return made

    CALLS.engines.clear()
    root = module("vllm", LLM=LLM, SamplingParams=SamplingParams, RequestOutput=RequestOutput)
    module(
        "vllm.sampling_params", SamplingParams=SamplingParams, StructuredOutputsParams=StructuredOutputsParams
    )
    module("vllm.lora")
    module("vllm.lora.request", LoRARequest=LoRARequest)
    module("vllm.platforms", current_platform=Platform("cuda" if cuda else "", cuda))
    return root
