"""The ``pallet_label`` schema: exactly the fields of the reference pallet-label model's output.

Every value is a string, as in the reference output (``"total_cases": "60"``), so that a model trained on the
reference data and this schema agree character for character.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas import field_labels as _labels

__all__ = ["PALLET_LABEL", "PalletLabel", "PalletProduct"]


class PalletProduct(BaseModel):
    """One product row of a pallet label."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        description="Item number and name, e.g. '293847 - ROLL OF METAL WIRE'.",
        json_schema_extra={
            **_labels("Description", "Product", "Item", "Item Description"),
            "ocr_pattern": r"^\d+ - \S",  # OCR often loses the spaces around the dash
        },
    )
    cases: str = Field(
        description="Cases of this product.", json_schema_extra=_labels("Cases", "Cs", "Case Qty")
    )
    sales_units: str = Field(
        description="Sales units of this product.",
        json_schema_extra=_labels("Sales Units", "Units", "Sales Unit", "Qty"),
    )
    layers: str = Field(
        description="Layers of this product.", json_schema_extra=_labels("Layers", "Lyrs", "Layer")
    )


class PalletLabel(BaseModel):
    """A printed pallet label (manifest) as the reference model outputs it."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(
        description="Route code, e.g. 'V183-RZ-924'.", json_schema_extra=_labels("Route", "Route No.")
    )
    pallet_number: str = Field(
        description="Pallet number on the load, e.g. '4'.",
        json_schema_extra=_labels("Pallet Number", "Pallet", "Pallet #", "Pallet No."),
    )
    delivery_date: str = Field(
        description="Delivery date as printed (m/d/yyyy).",
        json_schema_extra=_labels("Delivery Date", "Deliver On", "Delivery"),
    )
    load: str = Field(description="Load number.", json_schema_extra=_labels("Load", "Load #", "Load No."))
    dock: str = Field(description="Dock door.", json_schema_extra=_labels("Dock", "Dock Door", "Door"))
    shipment_id: str = Field(
        description="12-character shipment id, e.g. 'P24812736099'.",
        json_schema_extra=_labels("Shipment ID", "Shipment", "Shipment #", "Shipment No."),
    )
    destination: str = Field(
        description="Name and postal address the pallet goes to.",
        json_schema_extra=_labels("Destination", "Ship To", "Deliver To"),
    )
    asn_number: str = Field(
        description="10-digit advance shipping notice number.",
        json_schema_extra=_labels("ASN Number", "ASN", "ASN #", "ASN No."),
    )
    salesman: str = Field(
        description="Salesman's name.", json_schema_extra=_labels("Salesman", "Sales Rep", "Rep")
    )
    products: list[PalletProduct] = Field(description="Product rows, in printed order.")
    total_cases: str = Field(
        description="Sum of the products' cases.", json_schema_extra=_labels("Total Cases", "Cases Total")
    )
    total_units: str = Field(
        description="Sum of the products' sales units.",
        json_schema_extra=_labels("Total Units", "Units Total"),
    )
    total_layers: str = Field(
        description="Sum of the products' layers.", json_schema_extra=_labels("Total Layers", "Layers Total")
    )
    printed_date: str = Field(
        description="When the label was printed (mm/dd/yyyy hh:mm).",
        json_schema_extra={
            **_labels("Printed Date", "Printed", "Print Date", "Printed On"),
            "ocr_pattern": r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}$",
        },
    )
    page_number: str = Field(
        description="Page, e.g. '1 of 2'.", json_schema_extra=_labels("Page Number", "Page")
    )


PALLET_LABEL = SchemaSpec(
    name="pallet_label",
    model=PalletLabel,
    prompt="extract Document data in JSON format",
    description="Pallet label / load manifest with product rows (the reference PaliGemma fine-tune's output).",
    version="1",
)
