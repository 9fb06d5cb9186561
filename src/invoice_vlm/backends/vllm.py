r"""The vllm backend: PaliGemma, Idefics3 / SmolVLM, Gemma 3 and Qwen-VL served by vLLM, with a PEFT LoRA adapter.

It reads the same directories as the transformers backend (a base model, an adapter alone, or a directory saved by
`finetune` or `InvoiceExtractor.save_pretrained`), and it asks vLLM for exactly what the transformers backend computes:

- **the prompt exactly as trained**: our processor builds the token sequence, and vLLM is given it with the image
  block not yet expanded, which vLLM expands itself for the image it is sent (with the family's image settings as
  ``mm_processor_kwargs``: Qwen's pixel budget, Idefics3's tiling). For PaliGemma that is the tokens after the
  image block (image tokens, ``<bos>``, the prompt, ``\n``), and the engine gets a tokenizer copy that does not add
  ``<bos>`` in front (vLLM would put one before the image tokens otherwise); for a chat family it is the chat
  template's tokens with the one image placeholder (``<image>``, ``<start_of_image>``, ``<|image_pad|>``).
  Every answer's ``prompt_token_ids`` is compared with ours for that image, and a difference is an error naming
  the position;
- **greedy decoding** with the request's settings (``max_new_tokens``, ``min_new_tokens``; beams are refused);
- **constrained decoding** through vLLM's structured outputs, with the very grammar the transformers backend uses
  (xgrammar, from ``request.json_schema``, written with the training separators), not vLLM's compact JSON;
- **confidence**: the log-probability of each chosen token after the grammar's mask, spread over characters as the
  transformers backend does, so per-field confidence means the same number on both backends.

A LoRA adapter is applied with a ``LoRARequest`` when vLLM can apply it, and merged into a copy of the base weights
(cached, written once) when it cannot: vLLM applies LoRA to linear layers only, so an adapter that also trains whole
modules (``modules_to_save``, e.g. the projector with ``train_projector``), DoRA, LoRA biases, weight-changing
inits or ranks over 512 are merged instead, with a warning that says which and why.

vllm is imported only when this backend loads (the ``vllm`` extra; it needs an NVIDIA or AMD GPU); registering the
backend imports nothing heavy.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends import Generation, GenerationRequest
from invoice_vlm.backends._hf import (
    ADAPTER_WEIGHTS,
    apply_adapter,
    is_local,
    load_processor,
    load_weights,
    read_adapter_config,
    resolve_refs,
)
from invoice_vlm.backends.vlm import char_confidence, check_image_options, check_processor, model_inputs
from invoice_vlm.config import GenerationSettings, from_dict
from invoice_vlm.constraints import grammar_available, json_grammar
from invoice_vlm.errors import BackendError, InvoiceVLMWarning, ModelLoadError, require
from invoice_vlm.families import Family, family_for_model_type, get_family, read_model_type

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["VLLMBackend", "lora_blockers", "merged_copy"]

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The ranks vLLM's engine can be sized for (``max_lora_rank``); an adapter's rank is rounded up to one of them."""

_VLLM_INITS = frozenset({"gaussian", "eva", "orthogonal", "mica", "lora_ga"})
_ADAPTER_FILES = ("adapter_config.json", ADAPTER_WEIGHTS)
_MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors.index.json")


def lora_blockers(config: Mapping[str, Any]) -> list[str]:
    """Why vLLM cannot apply this PEFT LoRA config as a ``LoRARequest`` (empty: it can).

    These are the adapter features vLLM's LoRA loader refuses (``vllm/lora/peft_helper.py``): it applies low-rank
    updates to linear layers and nothing else.
    """
    reasons = []
    saved = [m for m in config.get("modules_to_save") or [] if m not in ("classifier", "score")]
    if saved:
        reasons.append(
            f"it trains whole modules ({', '.join(saved)}: modules_to_save), and vLLM applies only low-rank "
            "updates to linear layers"
        )
    if config.get("use_dora"):
        reasons.append("it is a DoRA adapter, which vLLM does not support")
    if config.get("lora_bias"):
        reasons.append("it trains LoRA biases (lora_bias), which vLLM does not support")
    init = config.get("init_lora_weights", True)
    if isinstance(init, str) and init.lower() not in _VLLM_INITS:
        reasons.append(f"its init {init!r} changes the base weights, which vLLM would not see")
    if config.get("layer_replication"):
        reasons.append("it replicates layers (layer_replication), which vLLM does not support")
    if _max_rank(config) > LORA_RANKS[-1]:
        reasons.append(f"its rank {_max_rank(config)} is above vLLM's largest ({LORA_RANKS[-1]})")
    return reasons


def _max_rank(config: Mapping[str, Any]) -> int:
    """The adapter's largest LoRA rank (``r``, or a layer's own in ``rank_pattern``)."""
    return max([int(config.get("r") or 1), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def _touches_vision(config: Mapping[str, Any], family: Family) -> bool:
    """Whether the adapter's targets reach into the family's vision tower or projector."""
    targets = config.get("target_modules") or []
    text = targets if isinstance(targets, str) else " ".join(map(str, targets))
    return any(name in text for name in (*family.vision, *family.projector))


def _cache_root() -> Path:
    root = os.environ.get("INVOICE_VLM_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "invoice_vlm"
    )
    return Path(root)


def _adapter_digest(base: str, adapter: str, dtype: str) -> str:
    """A key for a merged copy: the base reference, the dtype and the adapter's config and weights, by content."""
    digest = hashlib.sha256(f"{base}\0{dtype}".encode())
    for name in _ADAPTER_FILES:
        with _adapter_file(adapter, name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def _adapter_file(adapter: str, name: str) -> Path:
    if is_local(adapter):
        return Path(adapter).expanduser() / name
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(adapter, name))


_COMPLETE = "invoice_vlm_complete"
_EXPECTED_KEPT = 512
"""How many page sizes' prompt tokens the backend keeps to check vLLM's prompts against (least recently used go)."""


def _complete(target: Path) -> bool:
    return (target / _COMPLETE).is_file()


@contextmanager
def _staging(root: Path, prefix: str) -> Iterator[Path]:
    """A temporary folder under ``root`` to build in; gone afterwards unless `_publish` moved it into place."""
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    try:
        yield build
    finally:
        shutil.rmtree(build, ignore_errors=True)


def _publish(build: Path, target: Path) -> None:
    """Mark a finished folder complete and move it into place (if another process won the race, keep theirs)."""
    (build / _COMPLETE).write_text("{}\n")
    try:
        build.rename(target)
    except OSError:
        if not _complete(target):
            raise


def merged_copy(
    base: str, adapter: str, processor: Any, directory: str | Path | None = None, dtype: str = "bfloat16"
) -> Path:
    """The base weights with ``adapter`` merged in, saved once (safetensors) for vLLM to load as a plain model.

    The copy is kept under ``directory`` (default: ``$INVOICE_VLM_CACHE`` or ``~/.cache/invoice_vlm``, in
    ``vllm-merged/<digest of the base and the adapter's files>``) and reused while the adapter is unchanged; it is
    written in a temporary folder and moved into place when complete, so an interrupted merge is never loaded.
    Merging runs on the CPU in float32; the copy is saved in ``dtype``, the one vLLM serves it in.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    root = Path(directory) if directory is not None else _cache_root() / "vllm-merged"
    target = root / _adapter_digest(base, adapter, dtype)
    if _complete(target):
        return target
    with _staging(root, ".merging-") as build:
        net = load_weights(AutoModelForImageTextToText, base, "cpu", torch.float32)
        merged = apply_adapter(net, adapter, trainable=False, base=base).merge_and_unload()
        merged.to(getattr(torch, dtype)).save_pretrained(str(build), safe_serialization=True)
        processor.save_pretrained(str(build))
        _publish(build, target)
    return target


def engine_tokenizer(processor: Any, directory: str | Path | None = None) -> Path:
    """Our processor's files, with a tokenizer that adds no ``<bos>`` by itself, for vLLM's engine.

    vLLM inserts PaliGemma's image tokens after a leading ``<bos>`` when the tokenizer adds one, which is not how
    transformers' processor (nor any model trained through it) lays the prompt out; with ``add_bos_token`` false it
    inserts them at the start, as the processor does.
    """
    root = Path(directory) if directory is not None else _cache_root() / "vllm-tokenizers"
    with _staging(root, ".tokenizer-") as build:
        processor.save_pretrained(str(build))
        config_file = build / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.update(add_bos_token=False, add_eos_token=False)
        config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        digest = hashlib.sha256()
        for file in sorted(build.iterdir()):
            digest.update(file.name.encode() + file.read_bytes())
        target = root / digest.hexdigest()[:20]  # by content: the same processor reuses one folder
        if not _complete(target):
            _publish(build, target)
    return target


@dataclass(frozen=True)
class _Vllm:
    """The parts of vllm this backend uses (tests put a fake engine in vllm's place through ``sys.modules``)."""

    LLM: Any
    SamplingParams: Any
    StructuredOutputsParams: Any
    LoRARequest: Any
    platform: Any


def _import_vllm() -> _Vllm:
    require("The vllm backend", "vllm", "vllm")
    vllm = importlib.import_module("vllm")
    sampling = importlib.import_module("vllm.sampling_params")
    lora = importlib.import_module("vllm.lora.request")
    platforms = importlib.import_module("vllm.platforms")
    return _Vllm(
        vllm.LLM,
        vllm.SamplingParams,
        sampling.StructuredOutputsParams,
        lora.LoRARequest,
        platforms.current_platform,
    )


class VLLMBackend:
    """A model of a family vLLM serves, on a vLLM engine, with a LoRA adapter per request or merged into a copy.

    Args:
        engine: a ``vllm.LLM``.
        processor: the processor the model was trained with (it defines the prompt's tokens).
        vllm: the vllm classes used to build requests.
        lora_request: the ``LoRARequest`` sent with every prompt, or ``None`` (no adapter, or a merged copy).
        generation: default decoding settings.
        base_model: id or path of the base weights (saved in ``invoice_vlm.json``).
        adapter: id or path of the adapter, if any.
        merged: the merged copy the engine serves, when the adapter was merged.
        stop_ids: token ids that end an answer besides the tokenizer's EOS (the model's, the family's end token).
        family: the model's family (PaliGemma when not given).
        image_options: the image processor's settings, sent to vLLM with every image (the family's defaults when
            ``None``).
    """

    name = "vllm"
    model_format = "transformers"
    """Reads and writes the transformers (and paligemma) backend's directories, so a model moves between them unchanged."""

    def __init__(
        self,
        engine: Any,
        processor: Any,
        *,
        vllm: _Vllm,
        lora_request: Any = None,
        generation: GenerationSettings | None = None,
        base_model: str | None = None,
        adapter: str | None = None,
        merged: Path | None = None,
        stop_ids: Sequence[int] = (),
        family: Family | None = None,
        image_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.processor = processor
        self.vllm = vllm
        self.lora_request = lora_request
        self.generation = generation or GenerationSettings()
        self.base_model = base_model
        self.adapter = adapter
        self.merged = merged
        self.family = family if family is not None else get_family("paligemma")
        self.image_options = dict(self.family.image_options if image_options is None else image_options)
        self._given: dict[str, list[int]] = {}  # prompt -> the tokens vLLM is given
        # (prompt, page size) -> our processor's tokens: the sizes last seen, as many as `_EXPECTED_KEPT`.
        self._expected: OrderedDict[tuple[str, tuple[int, int]], list[int]] = OrderedDict()
        self._grammars: dict[str, str] = {}
        self._pieces: dict[int, bytes] = {}
        self._stop_ids = sorted(
            {*stop_ids, *self.family.end_token_ids(processor.tokenizer), processor.tokenizer.eos_token_id}
            - {None}
        )

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        dtype: str | None = None,
        generation: GenerationSettings | dict[str, Any] | None = None,
        merge_adapter: bool | None = None,
        merged_dir: str | Path | None = None,
        engine_options: Mapping[str, Any] | None = None,
        image_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> VLLMBackend:
        """Start a vLLM engine for a base model, an adapter alone (its base from ``adapter_config.json``), or both.

        The family comes from the base model's ``config.json``: PaliGemma 1/2, Idefics3 / SmolVLM, Gemma 3 and
        Qwen2-VL / Qwen2.5-VL / Qwen3-VL (Florence-2 is refused: vLLM serves no LoRA for it).

        Args:
            model: base id or directory, adapter directory, or a directory saved by invoice_vlm.
            adapter: PEFT LoRA adapter id or directory.
            device: ``None`` or ``"cuda"``: vLLM serves on the GPU it sees (choose one with
                ``CUDA_VISIBLE_DEVICES``).
            dtype: ``"bfloat16"`` (default), ``"float16"`` or ``"float32"``.
            generation: default decoding settings.
            merge_adapter: ``None`` (default): a ``LoRARequest`` when vLLM can apply the adapter, else a merged
                copy (with a warning saying why); ``True``: always serve a merged copy (no LoRA cost per token);
                ``False``: always a ``LoRARequest`` (refused when vLLM cannot apply the adapter).
            merged_dir: where merged copies are kept (default ``~/.cache/invoice_vlm/vllm-merged``).
            engine_options: more ``vllm.LLM`` arguments (``gpu_memory_utilization``, ``max_model_len``,
                ``tensor_parallel_size``...).
            image_options: image processor settings over the family's document defaults, as for the
                transformers backend; vLLM gets them with every image (``mm_processor_kwargs``).
            **options: none other are accepted (a misspelt option is a ``TypeError``, not silently dropped).

        Raises:
            MissingDependencyError: vllm is not installed (``pip install 'invoice-vlm[vllm]'``).
            ModelLoadError: no GPU vLLM can use, a device other than CUDA, or a model or adapter that cannot be
                loaded; one line saying what to do.
        """
        if options:
            raise TypeError(
                f"VLLMBackend.from_pretrained got unexpected option(s): {', '.join(sorted(options))}"
            )
        vllm = _import_vllm()
        if device is not None and device != "cuda":
            raise ModelLoadError(
                f"The vllm backend serves on the GPUs vLLM sees; choose them with CUDA_VISIBLE_DEVICES (device="
                f"{device!r}: a CPU is for the transformers backend, --backend transformers)."
            )
        platform = vllm.platform
        if not platform.is_cuda_alike():
            raise ModelLoadError(
                "The vllm backend needs an NVIDIA or AMD GPU, and vLLM sees none here "
                f"(platform: {getattr(platform, 'device_name', None) or 'none'}); use --backend transformers on this "
                "machine."
            )
        if isinstance(generation, dict):
            generation = from_dict(GenerationSettings, generation, where="generation settings")
        if generation is not None and generation.num_beams != 1:
            raise ModelLoadError(
                f"The vllm backend decodes greedily; num_beams={generation.num_beams} needs the paligemma backend."
            )
        refs = resolve_refs(model, adapter)
        family = family_for_model_type(read_model_type(refs.base))
        if not family.vllm:
            raise ModelLoadError(
                f"{refs.base!r} is a {family.title} model, which vLLM does not serve with a LoRA adapter. Use the "
                "transformers backend (--backend transformers) for it.",
                refs.base,
            )
        family.require()
        processor = load_processor(refs.processor)
        check_processor(family, processor, refs.processor)
        settings = check_image_options(
            processor, {**family.image_options, **dict(image_options or {})}, family
        )
        kwargs: dict[str, Any] = {
            "dtype": dtype or "bfloat16",
            "seed": 0,
            "limit_mm_per_prompt": {"image": 1},
            "logprobs_mode": "processed_logprobs",  # after the grammar's mask, as the transformers backend reports
            "structured_outputs_config": {"backend": "xgrammar"},
        }
        engine_model, lora_request, merged = refs.base, None, None
        if refs.adapter is not None:
            config = read_adapter_config(refs.adapter) or {}
            blockers = lora_blockers(config)
            if merge_adapter is False and blockers:
                raise ModelLoadError(
                    f"vLLM cannot apply adapter {refs.adapter!r} as LoRA: {'; '.join(blockers)}. Drop "
                    "merge_adapter=False to serve a merged copy.",
                    refs.adapter,
                )
            if merge_adapter or blockers:
                if blockers:
                    warnings.warn(
                        f"Serving a merged copy of {refs.adapter!r}: vLLM cannot apply it as LoRA because "
                        f"{'; '.join(blockers)}.",
                        InvoiceVLMWarning,
                        stacklevel=3,
                    )
                merged = merged_copy(refs.base, refs.adapter, processor, merged_dir, kwargs["dtype"])
                engine_model = str(merged)
            else:
                rank = next(r for r in LORA_RANKS if r >= _max_rank(config))
                kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=rank)
                if _touches_vision(config, family):
                    kwargs["enable_tower_connector_lora"] = True
                path = (
                    str(Path(refs.adapter).expanduser().resolve()) if is_local(refs.adapter) else refs.adapter
                )
                lora_request = vllm.LoRARequest("invoice_vlm", 1, lora_path=path)
        kwargs.update(engine_options or {})
        tokenizer_dir = engine_tokenizer(processor)
        try:
            engine = vllm.LLM(model=engine_model, tokenizer=str(tokenizer_dir), **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"vLLM could not start on {engine_model!r}: {type(exc).__name__}: {exc}", engine_model
            ) from exc
        return cls(
            engine,
            processor,
            vllm=vllm,
            lora_request=lora_request,
            generation=generation,
            base_model=refs.base,
            adapter=refs.adapter,
            merged=merged,
            stop_ids=_eos_ids(refs.base),
            family=family,
            image_options=settings,
        )

    @property
    def constrained_decoding(self) -> bool:
        """Constrained decoding is vLLM's own (structured outputs); the grammar text comes from xgrammar."""
        return grammar_available()

    def prompt_token_ids(self, prompt: str, image: Image.Image | None = None) -> list[int]:
        """The prompt's token sequence for ``image`` as our processor builds it (and as the model was trained on).

        PaliGemma's does not depend on the image; a chat family's image block grows with the image's size (Qwen's
        pixel budget, Idefics3's tiles), so it is built for ``image`` (a small blank page when none is given).
        """
        if image is None:
            from PIL import Image

            image = Image.new("RGB", (8, 8))
        return self._expected_ids(prompt, image)

    def _expected_ids(self, prompt: str, image: Image.Image) -> list[int]:
        """Our processor's tokens for ``prompt`` and an image of ``image``'s size (built once per prompt and size)."""
        key = (prompt, (0, 0) if self.family.prompt_style == "prefix" else image.size)
        if key in self._expected:
            self._expected.move_to_end(key)
        else:
            inputs = model_inputs(self.family, self.processor, [image], prompt, self.image_options)
            self._expected[key] = [int(i) for i in inputs["input_ids"][0]]
            if len(self._expected) > _EXPECTED_KEPT:  # photos come in endless sizes: keep memory bounded
                self._expected.popitem(last=False)
        return self._expected[key]

    def _given_ids(self, prompt: str) -> list[int]:
        """The tokens vLLM is given, before it expands the image block (built once per prompt)."""
        if prompt not in self._given:
            if self.family.prompt_style == "prefix":
                from PIL import Image

                self._given[prompt] = self._after_image(self._expected_ids(prompt, Image.new("RGB", (8, 8))))
            else:  # the chat template's tokens, as the processor tokenises them, with the one image placeholder
                text = self.family.prompt_text(self.processor, prompt)
                self._given[prompt] = [int(i) for i in self.processor.tokenizer(text)["input_ids"]]
        return self._given[prompt]

    def _after_image(self, ids: Sequence[int]) -> list[int]:
        """PaliGemma's tokens after the image block and its ``<bos>``: what vLLM is given (it inserts those)."""
        image_id = self.processor.image_token_id
        start = 0
        while start < len(ids) and ids[start] == image_id:
            start += 1
        if start != self.processor.image_seq_length or ids[start] != self.processor.tokenizer.bos_token_id:
            raise BackendError(
                f"The processor laid the prompt out unexpectedly ({start} image tokens, then token {ids[start]}); "
                "the vllm backend expects PaliGemma's <image>*n <bos> prompt \\n."
            )
        return list(ids[start + 1 :])

    def _sampling(self, request: GenerationRequest) -> Any:
        settings = request.settings
        if settings.num_beams != 1:
            raise ValueError(
                f"the vllm backend decodes greedily; num_beams={settings.num_beams} needs the paligemma backend."
            )
        structured = None
        if request.constrained:
            key = json.dumps(request.json_schema, sort_keys=False)
            if key not in self._grammars:
                self._grammars[key] = str(
                    json_grammar(request.json_schema)
                )  # EBNF, as the other backend uses
            structured = self.vllm.StructuredOutputsParams(grammar=self._grammars[key])
        return self.vllm.SamplingParams(
            temperature=0.0,
            max_tokens=settings.max_new_tokens,
            min_tokens=settings.min_new_tokens,
            logprobs=0,  # the chosen token's log-probability only
            stop_token_ids=self._stop_ids,
            skip_special_tokens=True,
            structured_outputs=structured,
        )

    def generate(self, images: Sequence[Image.Image], request: GenerationRequest) -> list[Generation]:
        """One greedy output per image from the engine, in order, with per-character confidence.

        Raises:
            BackendError: the engine built a prompt other than the processor's (the message names the position).
        """
        if not images:
            return []
        given = self._given_ids(request.prompt)
        extra = {"mm_processor_kwargs": dict(self.image_options)} if self.image_options else {}
        prompts = [
            {"prompt_token_ids": list(given), "multi_modal_data": {"image": image}, **extra}
            for image in images
        ]
        outputs = self.engine.generate(
            prompts, self._sampling(request), use_tqdm=False, lora_request=self.lora_request
        )
        tokenizer = self.processor.tokenizer
        results = []
        for image, output in zip(images, outputs, strict=True):
            expected = self._expected_ids(request.prompt, image)
            built = list(output.prompt_token_ids or [])
            if built != expected:
                raise BackendError(_prompt_mismatch(tokenizer, expected, built, self.family))
            completion = output.outputs[0]
            ids = list(completion.token_ids)
            cut = next((i for i, t in enumerate(ids) if t in self._stop_ids), len(ids))
            ids = ids[:cut]
            logprobs = completion.logprobs or []
            probs = [math.exp(logprobs[i][token].logprob) for i, token in enumerate(ids)] if logprobs else []
            if not probs:
                results.append(Generation(tokenizer.decode(ids, skip_special_tokens=True), num_tokens=cut))
                continue
            text, confidence = char_confidence(tokenizer, ids, probs, self._pieces)
            results.append(Generation(text, char_confidence=confidence, num_tokens=cut))
        return results

    def save_pretrained(self, directory: str | Path) -> None:
        """Write what the transformers backend writes: the adapter alone (or the base model's files) and the processor."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.adapter is not None:
            for name in _ADAPTER_FILES:
                shutil.copyfile(_adapter_file(self.adapter, name), directory / name)
        else:
            assert self.base_model is not None
            source = _local_model(self.base_model)
            for file in source.iterdir():
                if file.name in _MODEL_FILES or file.suffix == ".safetensors":
                    shutil.copyfile(file, directory / file.name)
        self.processor.save_pretrained(str(directory))


def _eos_ids(ref: str) -> list[int]:
    """The model's own end-of-sequence ids (``generation_config.json``), which the engine stops on too."""
    from transformers import GenerationConfig

    try:
        ids = GenerationConfig.from_pretrained(ref).eos_token_id
    except OSError:  # no generation_config.json: the tokenizer's end-of-sequence alone
        return []
    return [int(i) for i in (ids if isinstance(ids, list) else [ids]) if i is not None]


def _local_model(ref: str) -> Path:
    if is_local(ref):
        return Path(ref).expanduser()
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(ref, allow_patterns=[*_MODEL_FILES, "*.safetensors"]))


def _prompt_mismatch(tokenizer: Any, expected: Sequence[int], built: Sequence[int], family: Family) -> str:
    at = next(
        (i for i, (a, b) in enumerate(zip(expected, built, strict=False)) if a != b),
        min(len(expected), len(built)),
    )

    def around(ids: Sequence[int]) -> str:
        return repr(tokenizer.convert_ids_to_tokens(list(ids[max(0, at - 2) : at + 3])))

    return (
        f"vLLM built a prompt other than the one the model was trained with: {len(built)} tokens instead of "
        f"{len(expected)}, first difference at token {at} (trained: {around(expected)}, vLLM: {around(built)}). "
        + (
            "The engine's tokenizer must add no <bos> of its own; "
            if family.prompt_style == "prefix"
            else f"vLLM expands {family.title}'s image block from the image settings it is sent (mm_processor_kwargs); "
        )
        + "report this with your vllm version."
    )
