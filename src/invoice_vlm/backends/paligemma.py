"""The default backend: PaliGemma with transformers, plus a PEFT LoRA adapter when given.

torch, transformers and peft are imported inside the functions that need them, so registering this backend (which
happens whenever any backend is looked up) stays cheap.

Example:
    >>> # ex = InvoiceExtractor.from_pretrained("google/paligemma-3b-pt-448",
    >>> #                                       adapter="riphunter7001x/PaliGemma3_FT_OCR", schema="pallet_label")
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.backends import Generation
from invoice_vlm.config import GenerationSettings, from_dict
from invoice_vlm.errors import ModelLoadError, require

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["IMAGE_TOKEN", "PaliGemmaBackend", "build_prompt", "has_processor", "resolve_device_dtype"]

IMAGE_TOKEN = "<image>"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def build_prompt(prompt: str) -> str:
    """The text given to the processor: the image token, then the prompt exactly as trained.

    The processor itself expands the image token, inserts ``<bos>`` after it and ends the prefix with a newline, so
    nothing else is added here; a training collator must use this same function.
    """
    return IMAGE_TOKEN + prompt


def resolve_device_dtype(device: str | None, dtype: str | torch.dtype | None) -> tuple[str, torch.dtype]:
    """Pick the device and dtype: CUDA + bfloat16 when a GPU is present, else CPU + float32; either may be forced.

    Raises:
        ModelLoadError: an unknown dtype name, or CUDA asked for on a machine without it.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device={device!r} was asked for, but torch sees no CUDA GPU; use device='cpu'."
        )
    if dtype is None:
        return device, (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    if isinstance(dtype, torch.dtype):
        return device, dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ModelLoadError(f"Unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'.")
    return device, resolved


def _is_local(ref: str | Path) -> bool:
    text = str(ref)
    return Path(text).exists() or text.startswith((".", "/", "~")) or not _HUB_ID.match(text)


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object.", str(path))
    return data


def read_adapter_config(ref: str | Path) -> dict[str, Any] | None:
    """``adapter_config.json`` of a local directory or hub repo, or ``None`` when ``ref`` is not an adapter."""
    if _is_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"{str(ref)!r} is neither an existing directory nor a model id like 'org/name'.", str(ref)
            )
        file = path / "adapter_config.json"
        return _read_json(file) if file.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _read_json(Path(hf_hub_download(str(ref), "adapter_config.json")))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except Exception:  # unreachable hub, gated repo: the model load below reports it with advice
        return None


def _ensure_safetensors_adapter(ref: str | Path) -> None:
    if _is_local(ref):
        if not (Path(ref).expanduser() / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(
                f"Adapter {str(ref)!r} has no {ADAPTER_WEIGHTS}; only safetensors weights are loaded (nothing is "
                "unpickled). Convert it with peft: model.save_pretrained(dir, safe_serialization=True).",
                str(ref),
            )
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(str(ref), ADAPTER_WEIGHTS)
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot fetch {ADAPTER_WEIGHTS} of adapter {str(ref)!r}: {type(exc).__name__}: {exc}. Only safetensors "
            "adapters are loaded; check the id, log in for gated repos (hf auth login), or pass a local directory.",
            str(ref),
        ) from None


def has_processor(ref: str | Path) -> bool:
    """Whether ``ref`` is a local directory that holds processor files (an adapter saved with its processor)."""
    return _is_local(ref) and any(
        (Path(ref).expanduser() / name).is_file()
        for name in ("processor_config.json", "preprocessor_config.json")
    )


class PaliGemmaBackend:
    """PaliGemma (transformers) with an optional PEFT adapter; batched greedy generation with token scores.

    Args:
        model: a loaded ``PaliGemmaForConditionalGeneration`` (or a ``PeftModel`` around one).
        processor: the matching ``PaliGemmaProcessor``.
        device: where the model lives.
        generation: decoding settings.
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

        Only safetensors weights are loaded and ``trust_remote_code`` is never set.

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
        base: str | Path
        if adapter is None:
            assert model is not None
            adapter_config = read_adapter_config(model)
            if adapter_config is not None:
                adapter, base = model, adapter_config.get("base_model_name_or_path") or ""
                if not base:
                    raise ModelLoadError(
                        f"{model}/adapter_config.json names no base_model_name_or_path.", str(model)
                    )
            else:
                base = model
        else:
            if model is None:
                adapter_config = read_adapter_config(adapter)
                if adapter_config is None:
                    raise ModelLoadError(
                        f"{str(adapter)!r} has no adapter_config.json; is it a PEFT adapter?"
                    )
                base = adapter_config.get("base_model_name_or_path") or ""
                if not base:
                    raise ModelLoadError(f"{adapter}/adapter_config.json names no base_model_name_or_path.")
            else:
                base = model
        processor_ref = adapter if adapter is not None and has_processor(adapter) else base
        processor = cls._load_processor(processor_ref)
        net = cls._load_model(base, resolved_device, torch_dtype)
        if adapter is not None:
            _ensure_safetensors_adapter(adapter)
            from peft import PeftModel

            try:
                net = PeftModel.from_pretrained(net, str(adapter), is_trainable=False)
            except Exception as exc:
                raise ModelLoadError(
                    f"Cannot apply adapter {str(adapter)!r} to {str(base)!r}: {type(exc).__name__}: {exc}",
                    str(adapter),
                ) from None
        net.eval()
        vocab = net.get_input_embeddings().weight.shape[0]
        if len(processor.tokenizer) > vocab:
            raise ModelLoadError(
                f"The tokenizer of {str(processor_ref)!r} has {len(processor.tokenizer)} tokens but the model "
                f"{str(base)!r} embeds only {vocab}; the processor does not belong to this model."
            )
        return cls(
            net,
            processor,
            device=resolved_device,
            generation=generation,
            base_model=str(base),
            adapter=str(adapter) if adapter is not None else None,
        )

    @staticmethod
    def _load_processor(ref: str | Path) -> Any:
        from transformers import AutoProcessor

        try:
            processor = AutoProcessor.from_pretrained(str(ref))
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot load the processor of {str(ref)!r}: {type(exc).__name__}: {exc}. Check the id or path; gated "
                "models need a login (hf auth login) and network, or a local copy.",
                str(ref),
            ) from None
        if not hasattr(processor, "image_seq_length"):
            raise ModelLoadError(
                f"{str(ref)!r} has a {type(processor).__name__}, not a PaliGemma processor.", str(ref)
            )
        return processor

    @staticmethod
    def _load_model(ref: str | Path, device: str, dtype: torch.dtype) -> Any:
        from transformers import PaliGemmaForConditionalGeneration

        kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}
        if device.startswith("cuda"):
            kwargs["device_map"] = device
        try:
            net = PaliGemmaForConditionalGeneration.from_pretrained(str(ref), **kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot load PaliGemma weights from {str(ref)!r}: {type(exc).__name__}: {exc}. Only safetensors "
                "weights are loaded; gated models need a login (hf auth login) and network, or a local copy.",
                str(ref),
            ) from None
        return net if device.startswith("cuda") else net.to(device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.model.parameters()).dtype  # type: ignore[no-any-return]

    def _eos_ids(self) -> set[int]:
        ids = self.model.generation_config.eos_token_id
        found = set(ids if isinstance(ids, list) else [ids]) if ids is not None else set()
        found.add(self.processor.tokenizer.eos_token_id)
        return {i for i in found if i is not None}

    def generate(self, images: Sequence[Image.Image], prompt: str) -> list[Generation]:
        """Greedy-decode one output per image, with per-character confidence from the chosen tokens' probabilities."""
        import torch

        if not images:
            return []
        settings = self.generation
        text = build_prompt(prompt)
        inputs = self.processor(images=list(images), text=[text] * len(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        prefix_len = inputs["input_ids"].shape[1]
        tokenizer = self.processor.tokenizer
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=settings.max_new_tokens,
                num_beams=settings.num_beams,
                do_sample=False,
                output_scores=settings.num_beams == 1,
                return_dict_in_generate=True,
                pad_token_id=tokenizer.pad_token_id,
            )
        sequences = out.sequences[:, prefix_len:].tolist()
        token_probs: list[list[float]] | None = None
        if settings.num_beams == 1 and out.scores:
            steps = torch.stack(out.scores, dim=1).float()  # (batch, steps, vocab)
            chosen = out.sequences[:, prefix_len : prefix_len + steps.shape[1]].unsqueeze(-1)
            token_probs = steps.log_softmax(-1).gather(-1, chosen).squeeze(-1).exp().tolist()
        eos = self._eos_ids()
        results = []
        for row, ids in enumerate(sequences):
            cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
            ids = ids[:cut]
            results.append(self._decode(tokenizer, ids, token_probs[row][:cut] if token_probs else None))
        return results

    @staticmethod
    def _decode(tokenizer: Any, ids: list[int], probs: list[float] | None) -> Generation:
        text: str = tokenizer.decode(ids, skip_special_tokens=True)
        if probs is None:
            return Generation(text)
        conf: list[float] = []
        for i, p in enumerate(probs):
            # Characters that token i completes: decode the prefix so multi-byte and space merges stay right.
            upto = (
                len(tokenizer.decode(ids[: i + 1], skip_special_tokens=True))
                if i + 1 < len(ids)
                else len(text)
            )
            conf.extend([p] * max(0, upto - len(conf)))
        conf = conf[: len(text)] + [probs[-1] if probs else 1.0] * (len(text) - len(conf))
        return Generation(text, tuple(conf))

    def save_pretrained(self, directory: str | Path) -> None:
        """Save the adapter (or the full model when none is applied) and the processor, as safetensors."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(directory), safe_serialization=True)
        self.processor.save_pretrained(str(directory))
