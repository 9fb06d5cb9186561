"""Schemas: a pydantic model plus the prompt a model is trained and queried with, kept in a registry.

Example:
    >>> from pydantic import BaseModel
from pydantic.config import JsonDict
    >>> from invoice_vlm import register_schema, get_schema
    >>> @register_schema(name="parcel_tag", prompt="extract parcel tag in JSON format")
    ... class ParcelTag(BaseModel):
    ...     tracking_number: str
    >>> get_schema("parcel_tag").prompt
    'extract parcel tag in JSON format'
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, overload

from pydantic import BaseModel
from pydantic.config import JsonDict

from invoice_vlm.registry import SCHEMA_GROUP, Registry

__all__ = [
    "LeafField",
    "SchemaSpec",
    "field_labels",
    "get_schema",
    "list_schemas",
    "register_schema",
    "resolve_schema",
    "schemas",
    "unwrap_optional",
]

M = TypeVar("M", bound=type[BaseModel])

LeafKind = Literal["string", "integer", "number", "boolean"]


def field_labels(*words: str) -> JsonDict:
    """``json_schema_extra`` naming the words that label a field on paper (used by layout parsers).

    Example:
        >>> from pydantic import Field
        >>> shipment_id: str = Field(json_schema_extra=field_labels("Shipment ID", "Shipment #"))
    """
    return {"labels": list(words)}


@dataclass(frozen=True)
class LeafField:
    """One leaf of a schema, named by its path (``"shipment_id"``, ``"products.cases"``).

    Attributes:
        path: dotted path; list items are not numbered (``products.cases`` is the cases of every product).
        kind: the JSON type the schema gives the value, used to compare numbers as numbers.
        labels: words that label this field on a printed document (from ``json_schema_extra={"labels": [...]}``,
            else the humanised field name).
        in_list: the path of the enclosing list field, if any (``"products"``).
        required: whether the field must be present.
    """

    path: str
    kind: LeafKind
    labels: tuple[str, ...]
    in_list: str | None = None
    required: bool = True


@dataclass(frozen=True)
class SchemaSpec:
    """A named schema: the pydantic model results validate against and the prompt that asks for it.

    Attributes:
        name: registry name, a Python identifier (``"pallet_label"``).
        model: the pydantic model a valid output must satisfy.
        prompt: the text prompt after the image, exactly as the model was trained with it.
        description: one line for ``invoice-vlm schemas`` and the docs.
        version: bumped when the fields change, saved next to trained weights.
    """

    name: str
    model: type[BaseModel]
    prompt: str
    description: str = ""
    version: str = "1"
    _leaves: tuple[LeafField, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.model, type) and issubclass(self.model, BaseModel)):
            raise TypeError(f"SchemaSpec.model must be a pydantic BaseModel subclass, got {self.model!r}.")
        if not self.prompt or not self.prompt.strip():
            raise ValueError(f"Schema {self.name!r} needs a non-empty prompt.")
        if "<image>" in self.prompt:
            raise ValueError(
                f"Schema {self.name!r}: the prompt must not contain '<image>'; the backend adds the image tokens."
            )
        object.__setattr__(self, "_leaves", tuple(_leaves(self.model, "", None)))

    @property
    def leaf_fields(self) -> tuple[LeafField, ...]:
        """Every leaf field of the schema, in declaration order."""
        return self._leaves

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
        """Name, prompt, description, version and leaf field paths as plain data."""
        return {
            "name": self.name,
            "prompt": self.prompt,
            "description": self.description,
            "version": self.version,
            "fields": [leaf.path for leaf in self._leaves],
        }


def unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other annotation -> ``(annotation, False)``."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _kind(annotation: Any) -> LeafKind:
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if isinstance(annotation, type) and issubclass(annotation, float):
        return "number"
    from decimal import Decimal

    if annotation is Decimal:
        return "number"
    return "string"


def _humanise(name: str) -> str:
    return name.replace("_", " ").strip().title()


def _leaves(model: type[BaseModel], prefix: str, in_list: str | None) -> list[LeafField]:
    out: list[LeafField] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        path = f"{prefix}{key}"
        annotation, optional = unwrap_optional(info.annotation)
        origin = typing.get_origin(annotation)
        if origin in (list, tuple) and typing.get_args(annotation):
            item, _ = unwrap_optional(typing.get_args(annotation)[0])
            if isinstance(item, type) and issubclass(item, BaseModel):
                out.extend(_leaves(item, f"{path}.", path))
                continue
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out.extend(_leaves(annotation, f"{path}.", in_list))
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        labels_value = extra.get("labels")
        labels = (
            tuple(str(x) for x in labels_value)
            if isinstance(labels_value, (list, tuple))
            else (_humanise(key),)
        )
        out.append(
            LeafField(
                path=path,
                kind=_kind(annotation),
                labels=labels,
                in_list=in_list,
                required=info.is_required() and not optional,
            )
        )
    return out


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

    Example:
            >>> from pydantic import BaseModel
    from pydantic.config import JsonDict
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
