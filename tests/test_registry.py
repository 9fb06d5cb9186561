from __future__ import annotations

import importlib.metadata as md
import warnings

import pytest
from pydantic import BaseModel

import invoice_vlm
from invoice_vlm import SchemaSpec, get_schema, list_schemas, register_schema
from invoice_vlm.errors import DuplicateNameError, PluginLoadWarning, UnknownNameError


def _eps(group: str, entries: dict[str, str]):
    return [md.EntryPoint(name=n, value=v, group=group) for n, v in entries.items()]


class Parcel(BaseModel):
    tracking_number: str


PARCEL = SchemaSpec(name="parcel", model=Parcel, prompt="extract parcel in JSON format")


def patch_entry_points(monkeypatch, schemas=None, backends=None):
    table = {
        "invoice_vlm.schemas": _eps("invoice_vlm.schemas", schemas or {}),
        "invoice_vlm.backends": _eps("invoice_vlm.backends", backends or {}),
    }

    def fake_entry_points(*, group=None, **kw):
        return table.get(group, [])

    monkeypatch.setattr(md, "entry_points", fake_entry_points)


def test_builtins_come_from_entry_points():
    assert {"invoice", "pallet_label"} <= set(list_schemas())
    assert "paligemma" in invoice_vlm.list_backends()
    spec = get_schema("pallet_label")
    assert spec.prompt == "extract Document data in JSON format"
    paths = [leaf.path for leaf in spec.leaf_fields]
    assert paths == [
        "route",
        "pallet_number",
        "delivery_date",
        "load",
        "dock",
        "shipment_id",
        "destination",
        "asn_number",
        "salesman",
        "products.description",
        "products.cases",
        "products.sales_units",
        "products.layers",
        "total_cases",
        "total_units",
        "total_layers",
        "printed_date",
        "page_number",
    ]
    assert all(
        leaf.json_type == "string" for leaf in spec.leaf_fields
    )  # every value a string, as the reference
    assert (
        spec.tree.leaf("total_cases").sum_of == "products.cases"
        and spec.tree.leaf("products.cases").kind == "integer"
    )


def test_entry_point_discovery_with_third_party_plugin(monkeypatch, fresh_registries):
    patch_entry_points(
        monkeypatch,
        schemas={
            "pallet_label": "invoice_vlm.schemas.pallet_label:PALLET_LABEL",
            "parcel": "tests.test_registry:PARCEL",
        },
        backends={"fake": "invoice_vlm.testing:FakeBackend"},
    )
    assert list_schemas() == ["pallet_label", "parcel"]
    assert get_schema("parcel") is PARCEL
    assert invoice_vlm.list_backends() == ["fake"]


def test_broken_plugin_is_a_warning_naming_it(monkeypatch, fresh_registries):
    patch_entry_points(
        monkeypatch,
        schemas={"broken": "no_such_module_xyz:SPEC", "parcel": "tests.test_registry:PARCEL"},
    )
    with pytest.warns(PluginLoadWarning, match=r"'broken' \(no_such_module_xyz:SPEC\) failed to load"):
        names = list_schemas()
    assert names == ["parcel"]


def test_plugin_of_wrong_type_or_name_is_refused(monkeypatch, fresh_registries):
    patch_entry_points(
        monkeypatch, schemas={"other": "tests.test_registry:PARCEL", "cls": "tests.test_registry:Parcel"}
    )
    with pytest.warns(PluginLoadWarning) as record:
        assert list_schemas() == []
    messages = " ".join(str(r.message) for r in record)
    assert "calls itself 'parcel'" in messages
    assert "must be a SchemaSpec" in messages


def test_register_decorator_and_duplicates(fresh_registries):
    @register_schema(name="receipt", prompt="extract receipt in JSON format", description="till receipt")
    class Receipt(BaseModel):
        total: float

    spec = get_schema("receipt")
    assert spec.model is Receipt and spec.description == "till receipt"
    assert (spec.leaf_fields[0].kind, spec.leaf_fields[0].json_type) == ("decimal", "number")
    with pytest.raises(DuplicateNameError, match="'receipt' is already registered"):
        register_schema(Receipt, name="receipt", prompt="x")
    replaced = register_schema(Receipt, name="receipt", prompt="read the receipt", replace=True)
    assert replaced.prompt == "read the receipt"
    with pytest.raises(DuplicateNameError):
        register_schema(SchemaSpec(name="pallet_label", model=Receipt, prompt="p"))


def test_unknown_name_lists_registered():
    with pytest.raises(UnknownNameError) as info:
        get_schema("palet_label")
    assert str(info.value) == "Unknown schema 'palet_label'. Registered: invoice, pallet_label."
    assert isinstance(info.value, KeyError)
    with pytest.raises(UnknownNameError, match="Unknown backend 'nope'. Registered: .*paligemma"):
        invoice_vlm.get_backend("nope")


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="must not contain '<image>'"):
        SchemaSpec(name="x", model=Parcel, prompt="<image>extract")
    with pytest.raises(ValueError, match="non-empty prompt"):
        SchemaSpec(name="x", model=Parcel, prompt=" ")
    with pytest.raises(TypeError):
        SchemaSpec(name="x", model=dict, prompt="p")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Python identifier"):
        register_schema(Parcel, name="bad name", prompt="p")


def test_no_warnings_on_normal_discovery(fresh_registries):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "invoice" in list_schemas()
