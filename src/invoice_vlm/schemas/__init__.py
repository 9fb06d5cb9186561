"""Schemas: a pydantic model plus the prompt a model is trained and queried with, kept in a registry.

Examples:
    >>> from pydantic import BaseModel
    >>> from invoice_vlm import register_schema, get_schema
    >>> @register_schema(name="parcel_tag", prompt="extract parcel tag in JSON format")
    ... class ParcelTag(BaseModel):
    ...     tracking_number: str
    >>> get_schema("parcel_tag").prompt
    'extract parcel tag in JSON format'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel

from invoice_vlm.registry import SCHEMA_GROUP, Registry
from invoice_vlm.schemas.fields import (
    LeafField,
    ObjectNode,
    build_tree,
    field_info,
    field_labels,
    unwrap_optional,
)

__all__ = [
    "LeafField",
    "ObjectNode",
    "SchemaSpec",
    "field_info",
    "field_labels",
    "get_schema",
    "list_schemas",
    "register_schema",
    "resolve_schema",
    "schemas",
    "unwrap_optional",
]

M = TypeVar("M", bound=type[BaseModel])


@dataclass(frozen=True)
class SchemaSpec:
    """A named schema: the pydantic model results validate against and the prompt that asks for it.

    Attributes:
        name: registry name, a Python identifier (``"pallet_label"``).
        model: the pydantic model a valid output must satisfy.
        prompt: the text prompt after the image, exactly as the model was trained with it.
        description: one line for ``invoice-vlm schemas`` and the docs.
        version: bumped when the fields change, saved next to trained weights.
        pages: how a multi-page file is read: ``"merge"`` (one document: first page's header fields, last page's
            totals, list items in page order) or ``"each"`` (one document per page).
        date_order: how an ambiguous numeric date such as ``03/04/2024`` is read (``"DMY"``, ``"MDY"``); ``None``
            decides per document (see `invoice_vlm.normalize`).
        extra_labels: more words per field path that label it on paper (a plugin can extend a built-in schema's
            synonyms without redefining its model; see `with_labels`).
    """

    name: str
    model: type[BaseModel]
    prompt: str
    description: str = ""
    version: str = "1"
    pages: Literal["merge", "each"] = "each"
    date_order: Literal["DMY", "MDY", "YMD"] | None = None
    extra_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    _tree: ObjectNode | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, type) and issubclass(self.model, BaseModel)):
            raise TypeError(f"SchemaSpec.model must be a pydantic BaseModel subclass, got {self.model!r}.")
        if not self.prompt or not self.prompt.strip():
            raise ValueError(f"Schema {self.name!r} needs a non-empty prompt.")
        if "<image>" in self.prompt:
            raise ValueError(
                f"Schema {self.name!r}: the prompt must not contain '<image>'; the backend adds the image tokens."
            )
        if self.pages not in ("merge", "each"):
            raise ValueError(f"Schema {self.name!r}: pages must be 'merge' or 'each', got {self.pages!r}.")
        tree = build_tree(self.model)
        known = {leaf.path for leaf in tree.leaves} | _object_paths(tree)
        unknown = sorted(set(self.extra_labels) - known)
        if unknown:
            raise ValueError(
                f"Schema {self.name!r}: extra_labels name no field: {', '.join(unknown)}. "
                f"Fields: {', '.join(sorted(known))}."
            )
        object.__setattr__(self, "_tree", _with_labels(tree, self.extra_labels))

    @property
    def tree(self) -> ObjectNode:
        """The schema's field tree, built once (see `invoice_vlm.schemas.fields`)."""
        assert self._tree is not None
        return self._tree

    @property
    def leaf_fields(self) -> tuple[LeafField, ...]:
        """Every leaf field of the schema, in declaration order."""
        return self.tree.leaves

    def with_labels(self, labels: Mapping[str, Sequence[str]]) -> SchemaSpec:
        """A copy whose fields are also labelled by ``labels`` (path -> words), e.g. a plugin's language.

        Examples:
            >>> spec = get_schema("pallet_label").with_labels({"shipment_id": ["Sendungsnummer"]})
            >>> "Sendungsnummer" in spec.tree.leaf("shipment_id").labels
            True
        """
        merged = {k: tuple(v) for k, v in self.extra_labels.items()}
        for path, words in labels.items():
            merged[path] = (*merged.get(path, ()), *words)
        return replace(self, extra_labels=merged)

    def json_schema(self) -> dict[str, Any]:
        """The JSON schema of the model (feeds prompts, docs and constrained decoding)."""
        return self.model.model_json_schema()

    def validate_data(self, data: Any) -> BaseModel:
        """Validate a parsed JSON value; raises `pydantic.ValidationError` when it does not fit."""
        return self.model.model_validate(data)

    def dumps(self, data: BaseModel | dict[str, Any]) -> str:
        """Serialize a document the one way targets are written for training (``json.dumps`` defaults)."""
        if isinstance(data, BaseModel):
            data = data.model_dump(mode="json")
        return json.dumps(data, ensure_ascii=False)

    def describe(self) -> dict[str, Any]:
        """Name, prompt, description, version, page handling and leaf fields (path and kind) as plain data."""
        return {
            "name": self.name,
            "prompt": self.prompt,
            "description": self.description,
            "version": self.version,
            "pages": self.pages,
            "fields": [leaf.path for leaf in self.leaf_fields],
            "kinds": {leaf.path: leaf.kind for leaf in self.leaf_fields},
        }


def _object_paths(node: ObjectNode) -> set[str]:
    out = set()
    for child in (*node.sections, *node.tables):
        out.add(child.path)
        out |= _object_paths(child)
    return out


def _with_labels(node: ObjectNode, extra: Mapping[str, tuple[str, ...]]) -> ObjectNode:
    if not extra:
        return node

    def more(path: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*labels, *extra.get(path, ()))))

    return replace(
        node,
        labels=more(node.path, node.labels) if node.path else node.labels,
        fields=tuple(replace(f, labels=more(f.path, f.labels)) for f in node.fields),
        sections=tuple(_with_labels(s, extra) for s in node.sections),
        tables=tuple(_with_labels(t, extra) for t in node.tables),
    )


def _check_spec(name: str, obj: object) -> SchemaSpec:
    if callable(obj) and not isinstance(obj, (SchemaSpec, type)):
        obj = obj()
    if not isinstance(obj, SchemaSpec):
        raise TypeError(
            f"schema plugin {name!r} must be a SchemaSpec (or a function returning one), got {obj!r}"
        )
    if obj.name != name:
        raise ValueError(f"schema registered as {name!r} calls itself {obj.name!r}; the two names must match")
    return obj


schemas: Registry[SchemaSpec] = Registry("schema", SCHEMA_GROUP, _check_spec)
"""The schema registry; built-ins arrive through the ``invoice_vlm.schemas`` entry points."""


@overload
def register_schema(spec: SchemaSpec, /, *, replace: bool = False) -> SchemaSpec: ...
@overload
def register_schema(
    spec: M, /, *, name: str, prompt: str, description: str = "", version: str = "1", replace: bool = False
) -> M: ...
@overload
def register_schema(
    spec: None = None,
    /,
    *,
    name: str,
    prompt: str,
    description: str = "",
    version: str = "1",
    replace: bool = False,
) -> Callable[[M], M]: ...


def register_schema(
    spec: SchemaSpec | type[BaseModel] | None = None,
    /,
    *,
    name: str | None = None,
    prompt: str | None = None,
    description: str = "",
    version: str = "1",
    replace: bool = False,
) -> Any:
    """Register a schema: a `SchemaSpec`, a pydantic model with ``name=`` and ``prompt=``, or as a decorator.

    Examples:
            >>> from pydantic import BaseModel
            >>> class Receipt(BaseModel):
            ...     total: float
            >>> spec = register_schema(Receipt, name="receipt_demo", prompt="extract receipt in JSON format")
            >>> spec.name
            'receipt_demo'

    Raises:
            DuplicateNameError: the name is taken and ``replace`` is false.
    """
    if isinstance(spec, SchemaSpec):
        if name is not None or prompt is not None:
            raise TypeError(
                "register_schema(spec) takes its name and prompt from the SchemaSpec; pass no others."
            )
        return schemas.register(spec.name, spec, replace=replace)
    if name is None or prompt is None:
        raise TypeError(
            "register_schema(Model, ...) needs name= and prompt=, e.g. name='receipt', prompt='...'."
        )

    def decorate(model: M) -> M:
        schemas.register(
            name,
            SchemaSpec(name=name, model=model, prompt=prompt, description=description, version=version),
            replace=replace,
        )
        return model

    if spec is None:
        return decorate
    schemas.register(
        name,
        SchemaSpec(name=name, model=spec, prompt=prompt, description=description, version=version),
        replace=replace,
    )
    return schemas.get(name)


def get_schema(name: str) -> SchemaSpec:
    """Return the registered schema ``name``.

    Raises:
        UnknownNameError: nothing is registered as ``name``; the message lists what is.
    """
    return schemas.get(name)


def list_schemas() -> list[str]:
    """The names of the registered schemas, sorted."""
    return schemas.names()


def resolve_schema(schema: str | SchemaSpec) -> SchemaSpec:
    """A `SchemaSpec` as is, or a registered one by name."""
    return schema if isinstance(schema, SchemaSpec) else get_schema(schema)
