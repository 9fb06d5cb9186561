"""Exceptions and warnings raised by invoice_vlm.

Every exception derives from `InvoiceVLMError`, so ``except InvoiceVLMError`` catches all of ours. Each carries the
data a caller needs to act (the bad name and the valid ones, the file and line, the raw model output) and its message
quotes the bad value and says what to do::

    InvoiceVLMError
    ├── RegistryError
    │   ├── UnknownNameError        (also a KeyError)  name, kind, available
    │   └── DuplicateNameError      name, kind
    ├── MissingDependencyError      (also an ImportError)  extra, package
    ├── InputError                  (also a ValueError)  a wrong argument or input value
    ├── DocumentError               source
    ├── ModelLoadError              path
    ├── ConfigError                 path, key
    ├── BackendError                backend
    │   └── BackendContractError    (also a TypeError)  written to another contract
    ├── DatasetError                problems (each with file and line)
    └── TrainingError
        └── GuardError              check

    InvoiceVLMWarning (a UserWarning)
    └── PluginLoadWarning           a plugin failed to import; named, never a crash
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BackendContractError",
    "BackendError",
    "ConfigError",
    "DatasetError",
    "DatasetProblem",
    "DocumentError",
    "DuplicateNameError",
    "GuardError",
    "InputError",
    "InvoiceVLMError",
    "InvoiceVLMWarning",
    "MissingDependencyError",
    "ModelLoadError",
    "PluginLoadWarning",
    "RegistryError",
    "TrainingError",
    "UnknownNameError",
    "install_command",
    "require",
]


class InvoiceVLMError(Exception):
    """Base class of every error raised by invoice_vlm."""


class RegistryError(InvoiceVLMError):
    """A schema or backend registry refused a name."""


class UnknownNameError(RegistryError, KeyError):
    """A schema or backend name that nobody registered.

    Attributes:
        name: the name asked for.
        kind: what was looked up (``"schema"``, ``"backend"``).
        available: the names that are registered.
    """

    def __init__(self, name: str, kind: str, available: Iterable[str]) -> None:
        self.name = name
        self.kind = kind
        self.available = sorted(available)
        listed = (
            ", ".join(self.available)
            if self.available
            else "none (is invoice-vlm installed? pip install -e . from a clone)"
        )
        super().__init__(f"Unknown {kind} {name!r}. Registered: {listed}.")

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class DuplicateNameError(RegistryError):
    """A second registration under a name that is already taken."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        super().__init__(
            f"A {kind} named {name!r} is already registered. Choose another name, or pass replace=True "
            "to replace it on purpose."
        )


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` to invoice_vlm *as it is installed here*, so a hint always works.

    From a clone (an editable install) it names the clone, ``pip install -e '.[ocr]'`` when run from inside it; from
    a wheel or source archive on disk it names that file; from a package index it names the package.

    Examples:
        >>> install_command("ocr").startswith("pip install ") and "[ocr]'" in install_command("ocr")
        True
    """
    import json
    import os
    from importlib import metadata
    from urllib.parse import unquote, urlsplit

    try:
        direct = metadata.distribution("invoice-vlm").read_text("direct_url.json")
        info = json.loads(direct) if direct else {}
    except (metadata.PackageNotFoundError, ValueError):
        info = {}
    url = str(info.get("url", ""))
    if url.startswith("file://"):
        where = unquote(urlsplit(url).path)
        try:
            relative = os.path.relpath(where)
        except ValueError:  # another drive on Windows
            relative = where
        if not relative.startswith(".."):
            where = relative if relative == "." or os.sep in relative else f".{os.sep}{relative}"
        editable = bool((info.get("dir_info") or {}).get("editable"))
        return f"pip install {'-e ' if editable else ''}'{where}[{extra}]'"
    return f"pip install 'invoice-vlm[{extra}]'"


class MissingDependencyError(InvoiceVLMError, ImportError):
    """An optional extra is not installed; the message gives the command that installs it here.

    Attributes:
        extra: the extra that brings the package.
        package: the first missing package.
    """

    def __init__(self, feature: str, extra: str, package: str, advice: str = "") -> None:
        self.extra = extra
        self.package = package
        super().__init__(
            f"{feature} needs extra packages ({package} is missing): {install_command(extra)}"
            + (f". {advice}" if advice else "")
        )


TORCH_CPU_COMMAND = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
"""PyTorch's CPU build: put in before an extra that needs torch on a machine without an NVIDIA GPU."""


def require(feature: str, extra: str, *packages: str, advice: str = "") -> None:
    """Import ``packages`` or raise `MissingDependencyError` naming the first missing one and the extra to install."""
    import importlib

    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError:
            raise MissingDependencyError(feature, extra, package, advice) from None


class InputError(InvoiceVLMError, ValueError):
    """A value passed in is wrong (an argument out of range, files that do not pair up); the message says which."""


class DocumentError(InvoiceVLMError):
    """A document could not be opened as an image.

    Attributes:
        source: the document's name.
        reason: what kind of problem, for callers that map it (the HTTP service: 413, 415, 422): ``"missing"``,
            ``"empty"``, ``"unsupported"`` (not an image or PDF), ``"damaged"``, ``"encrypted"``, ``"too_large"``,
            ``"too_many_pages"``, ``"too_small"``, or ``None``.
    """

    def __init__(self, message: str, source: str | None = None, reason: str | None = None) -> None:
        self.source = source
        self.reason = reason
        super().__init__(message)


class ModelLoadError(InvoiceVLMError):
    """A model, adapter or processor could not be loaded."""

    def __init__(self, message: str, path: str | None = None) -> None:
        self.path = path
        super().__init__(message)


class ConfigError(InvoiceVLMError):
    """A configuration (``invoice_vlm.json``, a fine-tuning config) is wrong or contradicts the arguments."""

    def __init__(self, message: str, path: str | Path | None = None, key: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.key = key
        super().__init__(message)


class BackendError(InvoiceVLMError):
    """A backend broke its contract (for instance returned the wrong number of outputs)."""

    def __init__(self, message: str, backend: str | None = None) -> None:
        self.backend = backend
        super().__init__(message)


class BackendContractError(BackendError, TypeError):
    """A backend does not implement the contract (no ``generate``, the old one, a capability of the wrong type)."""


@dataclass(frozen=True)
class DatasetProblem:
    """One bad row or file of a dataset.

    Attributes:
        file: the annotation file (or image) the problem is in.
        line: 1-based line number in ``file``, or ``None`` when the problem is not on a line.
        message: what is wrong and what to do.
    """

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class DatasetError(InvoiceVLMError):
    """A dataset has bad rows; ``problems`` lists every one of them, so all can be fixed in one pass."""

    def __init__(self, problems: Sequence[DatasetProblem], header: str | None = None) -> None:
        self.problems = list(problems)
        head = header or f"The dataset has {len(self.problems)} problem(s); fix them or pass on_error='skip':"
        shown = "\n".join(f"  {p}" for p in self.problems[:200])
        more = f"\n  ... and {len(self.problems) - 200} more" if len(self.problems) > 200 else ""
        super().__init__(f"{head}\n{shown}{more}" if self.problems else head)


class TrainingError(InvoiceVLMError):
    """Fine-tuning cannot start or cannot go on."""


class GuardError(TrainingError):
    """A check on the first training batch found that training would silently learn the wrong thing."""

    def __init__(self, check: str, message: str) -> None:
        self.check = check
        super().__init__(f"[{check}] {message}")


class InvoiceVLMWarning(UserWarning):
    """Base class of the warnings invoice_vlm emits."""


class PluginLoadWarning(InvoiceVLMWarning):
    """A schema or backend plugin failed to load; it is skipped and named."""
