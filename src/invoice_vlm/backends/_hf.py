"""The one set of Hugging Face model plumbing, shared by the PaliGemma backend and `invoice_vlm.finetune`.

Adapter-or-base resolution, the safetensors-only rule, device and dtype choice, processor and weight loading: a
second model family needs only its model class and its prompt format, not another copy of these rules.

torch, transformers and peft are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from invoice_vlm.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ADAPTER_WEIGHTS",
    "PEFT_DEPRECATION",
    "ModelRefs",
    "apply_adapter",
    "check_hub",
    "ensure_safetensors_adapter",
    "has_processor",
    "hub_offline",
    "is_local",
    "load_processor",
    "load_weights",
    "quiet_peft",
    "read_adapter_config",
    "resolve_device_dtype",
    "resolve_refs",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ADAPTER_WEIGHTS = "adapter_model.safetensors"


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


def is_local(ref: str | Path) -> bool:
    """Whether ``ref`` names a local path rather than a Hub id like ``org/name``: it is never looked up on the Hub.

    A path is anything that exists here, starts with ``.``, ``/`` or ``~``, has a backslash or more than one
    ``/``, is not shaped like ``org/name``, or whose first part is a folder here (``data/palets`` when ``data/``
    exists: a typo in a local path, not a Hub id).
    """
    text = str(ref)
    if text.startswith((".", "/", "~")) or "\\" in text or text.count("/") != 1 or not _HUB_ID.match(text):
        return True
    return Path(text).expanduser().exists() or Path(text.split("/", 1)[0]).is_dir()


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set: Hub ids are read from the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_hub(ref: str, what: str = "model", timeout: float = 5.0) -> None:
    """Ask the Hub about ``ref`` once, with a short timeout, before anything downloads (skipped offline).

    Raises:
        ModelLoadError: the Hub cannot be reached (the message says how to use the local cache with
            ``HF_HUB_OFFLINE=1``), or the repository does not exist or is gated.
    """
    if hub_offline():
        return
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    api = HfApi()
    info = api.dataset_info if what == "dataset" else api.model_info
    try:
        info(ref, timeout=timeout)
    except GatedRepoError:
        raise ModelLoadError(
            f"{ref!r} is a gated {what} on the Hugging Face Hub: accept its terms on its page and log in "
            "(hf auth login), or pass a local directory.",
            ref,
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"No {what} {ref!r} on the Hugging Face Hub (or it is private: hf auth login). If it is a local folder, "
            f"write it as ./{ref}.",
            ref,
        ) from None
    except HfHubHTTPError:
        return  # the Hub answered (rate limit, server error): the download reports the rest
    except Exception as exc:  # no network, DNS, proxy, timeout: one attempt, then advice
        raise ModelLoadError(
            f"Cannot reach the Hugging Face Hub for {what} {ref!r} ({type(exc).__name__}). If it was downloaded "
            "before, set HF_HUB_OFFLINE=1 to use the local cache; otherwise check the network, or pass a local "
            "directory.",
            ref,
        ) from None


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object.", str(path))
    return data


def read_adapter_config(ref: str | Path) -> dict[str, Any] | None:
    """``adapter_config.json`` of a local directory or hub repo, or ``None`` when ``ref`` is not an adapter."""
    if is_local(ref):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                f"{str(ref)!r} does not exist here (and it is a local path, so the Hub was not asked); check the "
                "path, or give a Hub id like 'org/name'.",
                str(ref),
            )
        file = path / "adapter_config.json"
        return _read_json(file) if file.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return _read_json(Path(hf_hub_download(str(ref), "adapter_config.json")))
    except (EntryNotFoundError, LocalEntryNotFoundError):
        return None
    except Exception:  # unreachable hub, gated repo: the model load reports it with advice
        return None


def ensure_safetensors_adapter(ref: str | Path) -> None:
    """Refuse an adapter without ``adapter_model.safetensors``: nothing is ever unpickled."""
    if is_local(ref):
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
    return is_local(ref) and any(
        (Path(ref).expanduser() / name).is_file()
        for name in ("processor_config.json", "preprocessor_config.json")
    )


@dataclass(frozen=True)
class ModelRefs:
    """Where the base weights, the adapter (if any) and the processor come from."""

    base: str
    adapter: str | None
    processor: str


def _base_of(adapter: str | Path, config: dict[str, Any] | None) -> str:
    if config is None:
        raise ModelLoadError(
            f"{str(adapter)!r} has no adapter_config.json; is it a PEFT adapter?", str(adapter)
        )
    base = config.get("base_model_name_or_path") or ""
    if not base:
        raise ModelLoadError(f"{adapter}/adapter_config.json names no base_model_name_or_path.", str(adapter))
    return str(base)


def resolve_refs(model: str | Path | None, adapter: str | Path | None) -> ModelRefs:
    """A base model, an adapter alone (its base read from ``adapter_config.json``), or both.

    The processor comes from the adapter's directory when it was saved there (fine-tuning saves it), else from the
    base.

    Raises:
        ModelLoadError: neither is given, a path does not exist, or an adapter names no base.
    """
    if model is None and adapter is None:
        raise ModelLoadError(
            "A model is needed: a base id such as 'google/paligemma-3b-pt-448', an adapter id or directory, or a "
            "directory saved by invoice_vlm."
        )
    for ref in (model, adapter):
        if ref is not None and not is_local(ref):
            check_hub(str(ref))
    if adapter is None:
        assert model is not None
        config = read_adapter_config(model)
        if config is not None:
            adapter, base = model, _base_of(model, config)
        else:
            base = str(model)
    else:
        base = _base_of(adapter, read_adapter_config(adapter)) if model is None else str(model)
    if base not in (str(model), str(adapter)):  # read from an adapter's config: ask about it too
        if is_local(base):
            if not Path(base).expanduser().exists():
                raise ModelLoadError(
                    f"The adapter's base model {base!r} (adapter_config.json: base_model_name_or_path) does not exist "
                    "here; pass the base with --model (model=).",
                    base,
                )
        else:
            check_hub(base)
    elif is_local(base) and not Path(base).expanduser().exists():
        raise ModelLoadError(
            f"{base!r} does not exist here (and it is a local path, so the Hub was not asked); check the path, or "
            "give a Hub id like 'org/name'.",
            base,
        )
    processor = adapter if adapter is not None and has_processor(adapter) else base
    return ModelRefs(
        base=base, adapter=str(adapter) if adapter is not None else None, processor=str(processor)
    )


def load_processor(ref: str | Path) -> Any:
    """``AutoProcessor.from_pretrained(ref)`` with an error that says what to check."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(ref))
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot load the processor of {str(ref)!r}: {type(exc).__name__}: {exc}. Check the id or path; gated "
            "models need a login (hf auth login) and network, or a local copy.",
            str(ref),
        ) from None


def load_weights(
    model_class: Any,
    ref: str | Path,
    device: str,
    dtype: torch.dtype,
    *,
    quantize_4bit: bool = False,
    attn_implementation: str | None = "sdpa",
) -> Any:
    """Load safetensors weights of ``model_class`` onto ``device`` (4-bit NF4 for QLoRA), never trusting remote code.

    Raises:
        MissingDependencyError: 4-bit loading without bitsandbytes.
        ModelLoadError: the weights cannot be loaded, or 4-bit loading off CUDA.
    """
    import torch

    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantize_4bit:
        if not device.startswith("cuda"):
            raise ModelLoadError("4-bit (QLoRA) loading needs a CUDA GPU; use method='lora' on this machine.")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingDependencyError("QLoRA", "qlora", "bitsandbytes") from None
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    if device.startswith("cuda"):
        kwargs["device_map"] = {"": torch.cuda.current_device()} if device == "cuda" else {"": device}
    try:
        net = model_class.from_pretrained(str(ref), **kwargs)
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot load {getattr(model_class, '__name__', 'model')} weights from {str(ref)!r}: "
            f"{type(exc).__name__}: {exc}. Only safetensors weights are loaded; gated models need a login "
            "(hf auth login) and network, or a local copy.",
            str(ref),
        ) from None
    return net if device.startswith("cuda") else net.to(device)


PEFT_DEPRECATION = "`is_gradient_checkpointing` is deprecated and will be removed in v6"
"""peft (0.21) asks transformers 5 for a renamed attribute whenever it wraps a model; not ours to fix, not the user's
to read: silenced where we wrap, by this exact message."""


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence peft's one known deprecation warning (`PEFT_DEPRECATION`) and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=re.escape(PEFT_DEPRECATION), category=FutureWarning)
        yield


def apply_adapter(net: Any, adapter: str | Path, *, trainable: bool, base: str | Path | None = None) -> Any:
    """Wrap ``net`` in the PEFT adapter at ``adapter`` (safetensors only)."""
    ensure_safetensors_adapter(adapter)
    from peft import PeftModel

    try:
        with quiet_peft():
            return PeftModel.from_pretrained(net, str(adapter), is_trainable=trainable)
    except Exception as exc:
        raise ModelLoadError(
            f"Cannot apply adapter {str(adapter)!r} to {str(base or 'the base model')!r}: {type(exc).__name__}: {exc}",
            str(adapter),
        ) from None
