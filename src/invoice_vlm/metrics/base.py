"""Metrics as small objects in a registry, in the manner of sacrebleu's ``metrics/base.py``.

A metric is one class: a name, a line saying what it measures, whether higher is better, and ``measure(case)``.
`invoice_vlm.evaluate` and the report iterate the registry, so a new metric (your own, from a plugin) lands in every
report as one new class plus a registration, with no edit to the report. Every `Score` carries a signature (library
versions and the metric's settings) so that two reports can be compared honestly.

Built-in metrics register through the ``invoice_vlm.metrics`` entry points, exactly as a third-party one would.

Examples:
    >>> from invoice_vlm.metrics import Metric, register_metric
    >>> @register_metric
    ... class ShipmentIdExact(Metric):
    ...     name = "shipment_id_exact"
    ...     label = "shipment id exact"
    ...     description = "share of documents whose shipment id is exactly right"
    ...     def measure(self, case):
    ...         pairs = zip(case.predictions, case.references)
    ...         right = [bool(p) and p.get("shipment_id") == r.get("shipment_id") for p, r in pairs]
    ...         return sum(right) / len(right), {}
    >>> get_metric("shipment_id_exact").name
    'shipment_id_exact'
    >>> metrics.unregister("shipment_id_exact")
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from invoice_vlm.registry import Registry
from invoice_vlm.schemas import SchemaSpec

if TYPE_CHECKING:
    from invoice_vlm.extraction import Extraction

__all__ = [
    "METRIC_GROUP",
    "Case",
    "Metric",
    "Score",
    "get_metric",
    "list_metrics",
    "metrics",
    "register_metric",
]

METRIC_GROUP = "invoice_vlm.metrics"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class Case:
    """What every metric of one evaluation reads, computed once and shared.

    Attributes:
        raw_texts: what the model wrote, one per document.
        targets: the true JSON texts.
        predictions: per document the validated object, else what was read (normalised, unvalidated), else ``None``.
        references: the true documents as dicts.
        parsed: per document the `Extraction` made from its text.
        schema: the schema documents were scored against.
    """

    def __init__(
        self,
        raw_texts: Sequence[str],
        targets: Sequence[str],
        predictions: Sequence[dict[str, Any] | None],
        references: Sequence[dict[str, Any]],
        parsed: Sequence[Extraction],
        schema: SchemaSpec,
    ) -> None:
        self.raw_texts = list(raw_texts)
        self.targets = list(targets)
        self.predictions = list(predictions)
        self.references = list(references)
        self.parsed = list(parsed)
        self.schema = schema
        self._fields: dict[str, Any] | None = None

    @property
    def fields(self) -> dict[str, Any]:
        """`field_accuracy` over the documents, computed on first use and shared by the metrics that need it."""
        if self._fields is None:
            from invoice_vlm.metrics.fields import field_accuracy

            self._fields = field_accuracy(self.predictions, self.references, schema=self.schema)
        return self._fields


@dataclass(frozen=True)
class Score:
    """One metric's result.

    Attributes:
        name: the metric's registry name.
        value: the headline number.
        higher_is_better: how to read ``value``.
        detail: everything else the metric computed (per-field accuracy, BLEU's precisions...).
        signature: what produced the number: library versions and the metric's settings.
    """

    name: str
    value: float
    higher_is_better: bool
    detail: dict[str, Any] = field(default_factory=dict)
    signature: str = ""


class Metric:
    """Base of every metric: subclasses set the class attributes and implement `measure`.

    Attributes:
        name: registry name and key in ``EvaluationReport.metrics`` (``"field_accuracy"``).
        label: short name in the report's table (``"field accuracy"``).
        description: what the number says, one line.
        higher_is_better: false for error rates.
        digits: decimals shown in the report.
        order: position in the report (lower first); ties by name.
        requires: Python packages the metric needs, for the signature and an early error.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    description: ClassVar[str] = ""
    higher_is_better: ClassVar[bool] = True
    digits: ClassVar[int] = 4
    order: ClassVar[int] = 100
    requires: ClassVar[tuple[str, ...]] = ()

    def measure(self, case: Case) -> tuple[float, dict[str, Any]]:
        """The headline value and any detail, for the documents of ``case``."""
        raise NotImplementedError(f"{type(self).__name__} must implement measure(case)")

    def settings(self) -> str:
        """The metric's own settings for its signature (BLEU: tokenizer, smoothing, n-gram order)."""
        return ""

    def signature(self) -> str:
        """``name|invoice_vlm:<version>|<package>:<version>...|<settings>``."""
        parts = [self.name, f"invoice_vlm:{_version('invoice-vlm')}"]
        parts += [f"{p}:{_version(p)}" for p in self.requires]
        if self.settings():
            parts.append(self.settings())
        return "|".join(parts)

    def compute(self, case: Case) -> Score:
        """Measure ``case`` and wrap the result with its signature (the template method)."""
        value, detail = self.measure(case)
        return Score(self.name, float(value), self.higher_is_better, detail, self.signature())


M = TypeVar("M", bound=type[Metric])


def _check_metric(name: str, obj: object) -> type[Metric]:
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise TypeError(
            f"metric plugin {name!r} must be a subclass of invoice_vlm.metrics.Metric, got {obj!r}"
        )
    if obj.name != name:
        raise ValueError(f"metric registered as {name!r} calls itself {obj.name!r}; the two names must match")
    if not obj.label or not obj.description:
        raise ValueError(f"metric {name!r} needs a label and a description for the report")
    return obj


metrics: Registry[type[Metric]] = Registry("metric", METRIC_GROUP, _check_metric)
"""The metric registry; built-ins arrive through the ``invoice_vlm.metrics`` entry points."""


def register_metric(cls: M, /, *, replace: bool = False) -> M:
    """Register a `Metric` subclass under its ``name`` (also usable as a class decorator)."""
    metrics.register(cls.name, cls, replace=replace)
    return cls


def get_metric(name: str) -> Metric:
    """An instance of the metric registered as ``name``; an unknown name's error lists the registered ones."""
    return metrics.get(name)()


def list_metrics() -> list[Metric]:
    """An instance of every registered metric, in report order."""
    found = [metrics.get(name)() for name in metrics.names()]
    return sorted(found, key=lambda m: (m.order, m.name))
