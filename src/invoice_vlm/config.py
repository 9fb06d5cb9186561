"""Settings saved next to weights as ``invoice_vlm.json``, so what was used to train is what is used to infer."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from invoice_vlm.errors import ConfigError, InvoiceVLMWarning

__all__ = ["CONFIG_NAME", "ExtractorConfig", "GenerationSettings", "from_dict", "package_version"]

CONFIG_NAME = "invoice_vlm.json"

D = TypeVar("D")


def package_version() -> str:
    """The installed invoice-vlm version (``"0+unknown"`` when running from an uninstalled tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("invoice-vlm")
    except PackageNotFoundError:
        return "0+unknown"


def from_dict(cls: type[D], data: dict[str, Any], *, where: str) -> D:
    """Build dataclass ``cls`` from ``data``, dropping unknown keys with a warning (a newer version wrote them)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}.", path=where)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        warnings.warn(
            f"{where}: ignoring unknown setting(s) {', '.join(unknown)} (written by another invoice_vlm version?).",
            InvoiceVLMWarning,
            stacklevel=3,
        )
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}", path=where) from None


@dataclass
class GenerationSettings:
    """How the backend decodes. Greedy by default: extraction wants the single most likely reading."""

    max_new_tokens: int = field(
        default=512,
        metadata={"help": "Most tokens generated per document; a cut-off output is reported, not guessed."},
    )
    min_new_tokens: int = field(
        default=0,
        metadata={
            "help": "Fewest tokens generated per document (benchmarks force equal output lengths with it)."
        },
    )
    num_beams: int = field(default=1, metadata={"help": "Beam search width; 1 is greedy decoding."})
    constrained: bool | None = field(
        default=None,
        metadata={
            "help": "Constrain decoding to the schema (xgrammar): the output always parses and fits the schema's "
            "types. None: on when the backend can (the 'constrained' extra is installed) and decoding is greedy."
        },
    )

    jump_forward: bool = field(
        default=True,
        metadata={
            "help": "Under constraints, feed the text the schema forces (keys, quotes, commas) in the same forward "
            "pass as the token before it instead of a decoding step per token (transformers backend; the vllm "
            "backend decodes token by token either way). A trained model writes the same text from fewer steps; "
            "an untrained one may split the forced text differently. See docs/constrained.md."
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.jump_forward, bool):
            raise ConfigError(f"jump_forward must be true or false, got {self.jump_forward!r}.")
        if self.constrained is not None and not isinstance(self.constrained, bool):
            raise ConfigError(f"constrained must be true, false or null, got {self.constrained!r}.")
        if not isinstance(self.min_new_tokens, int) or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(
                f"min_new_tokens must be an integer from 0 to max_new_tokens ({self.max_new_tokens}), "
                f"got {self.min_new_tokens!r}."
            )
        if self.constrained and self.min_new_tokens:
            raise ConfigError(
                "min_new_tokens cannot be combined with constrained decoding: it would force tokens past the end "
                "of a finished document; set min_new_tokens=0, or constrained=False."
            )
        if self.constrained and self.num_beams != 1:
            raise ConfigError(
                f"constrained decoding works with greedy decoding only (num_beams=1), not num_beams={self.num_beams}; "
                "set num_beams=1, or constrained=False (--no-constrained) to search beams unconstrained."
            )
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not isinstance(self.num_beams, int) or self.num_beams < 1:
            raise ConfigError(f"num_beams must be a positive integer, got {self.num_beams!r}.")


@dataclass
class ExtractorConfig:
    """What ``invoice_vlm.json`` holds: enough to reproduce the training-time prompt and schema exactly."""

    schema: str = field(metadata={"help": "Registered schema name."})
    prompt: str = field(metadata={"help": "The exact text prompt after the image tokens."})
    backend: str = field(default="paligemma", metadata={"help": "Registered backend name."})
    generation: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "GenerationSettings as a dict."}
    )
    schema_version: str | None = field(default=None, metadata={"help": "The schema's version when saved."})
    base_model: str | None = field(
        default=None, metadata={"help": "Base model id or path, when there is one."}
    )
    image_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Image processor settings the model reads pages with (transformers backend)."},
    )
    version: str = field(
        default_factory=package_version, metadata={"help": "invoice-vlm version that wrote it."}
    )

    def generation_settings(self) -> GenerationSettings:
        """The saved generation settings as a `GenerationSettings`."""
        return from_dict(GenerationSettings, self.generation, where=f"{CONFIG_NAME} 'generation'")

    def save(self, directory: str | Path) -> Path:
        """Write ``invoice_vlm.json`` into ``directory`` (created if needed)."""
        path = Path(directory) / CONFIG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return path

    @classmethod
    def load(cls, directory: str | Path) -> ExtractorConfig:
        """Read ``invoice_vlm.json`` from ``directory``."""
        path = Path(directory) / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} does not exist.", path=path) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}", path=path) from None
        config = from_dict(cls, data, where=str(path))
        for key in ("schema", "prompt", "backend"):
            if not isinstance(getattr(config, key), str) or not getattr(config, key):
                raise ConfigError(f"{path}: {key!r} must be a non-empty string.", path=path, key=key)
        return config

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds an ``invoice_vlm.json``."""
        return (Path(directory) / CONFIG_NAME).is_file()
