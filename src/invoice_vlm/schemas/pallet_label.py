"""The ``pallet_label`` schema: exactly the fields of the reference pallet-label model's output.

Every value is a string, as in the reference output (``"total_cases": "60"``), so that a model trained on the
reference data and this schema agree character for character. Every string and the product list have a generous
``max_length`` (a reference label's longest value is well inside it), so constrained decoding has a finite grammar.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas.fields import field_info

__all__ = ["PALLET_LABEL", "PalletLabel", "PalletProduct"]


class PalletProduct(BaseModel):
    """One product row of a pallet label."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        max_length=120,
        description="Item number and name, e.g. '293847 - ROLL OF METAL WIRE'.",
        json_schema_extra=field_info(
            "Description",
            "Product",
            "Item",
            "Item Description",
            "Article",
            "Artikel",
            "Omschrijving",
            "Désignation",
            "Beschreibung",
            ocr_pattern=r"^\d+ - \S",  # OCR often loses the spaces around the dash
        ),
    )
    cases: str = Field(
        max_length=12,
        description="Cases of this product.",
        json_schema_extra=field_info("Cases", "Cs", "Case Qty", kind="integer"),
    )
    sales_units: str = Field(
        max_length=12,
        description="Sales units of this product.",
        json_schema_extra=field_info("Sales Units", "Units", "Sales Unit", "Qty", kind="integer"),
    )
    layers: str = Field(
        max_length=12,
        description="Layers of this product.",
        json_schema_extra=field_info("Layers", "Lyrs", "Layer", kind="integer"),
    )


class PalletLabel(BaseModel):
    """A printed pallet label (manifest) as the reference model outputs it."""

    model_config = ConfigDict(extra="forbid")

    route: str = Field(
        max_length=40,
        description="Route code, e.g. 'V183-RZ-924'.",
        json_schema_extra=field_info("Route", "Route No.", kind="code"),
    )
    pallet_number: str = Field(
        max_length=12,
        description="Pallet number on the load, e.g. '4'.",
        json_schema_extra=field_info("Pallet Number", "Pallet", "Pallet #", "Pallet No.", kind="integer"),
    )
    delivery_date: str = Field(
        max_length=24,
        description="Delivery date as printed (m/d/yyyy).",
        json_schema_extra=field_info("Delivery Date", "Deliver On", "Delivery", kind="code"),
    )
    load: str = Field(
        max_length=40,
        description="Load number.",
        json_schema_extra=field_info("Load", "Load #", "Load No.", kind="code"),
    )
    dock: str = Field(
        max_length=24,
        description="Dock door.",
        json_schema_extra=field_info("Dock", "Dock Door", "Door", kind="code"),
    )
    shipment_id: str = Field(
        max_length=40,
        description="12-character shipment id, e.g. 'P24812736099'.",
        json_schema_extra=field_info("Shipment ID", "Shipment", "Shipment #", "Shipment No.", kind="code"),
    )
    destination: str = Field(
        max_length=200,
        description="Name and postal address the pallet goes to.",
        json_schema_extra=field_info("Destination", "Ship To", "Deliver To"),
    )
    asn_number: str = Field(
        max_length=40,
        description="10-digit advance shipping notice number.",
        json_schema_extra=field_info("ASN Number", "ASN", "ASN #", "ASN No.", kind="code"),
    )
    salesman: str = Field(
        max_length=80,
        description="Salesman's name.",
        json_schema_extra=field_info("Salesman", "Sales Rep", "Rep"),
    )
    products: list[PalletProduct] = Field(max_length=50, description="Product rows, in printed order.")
    total_cases: str = Field(
        max_length=12,
        description="Sum of the products' cases.",
        json_schema_extra=field_info("Total Cases", "Cases Total", kind="integer", sum_of="products.cases"),
    )
    total_units: str = Field(
        max_length=12,
        description="Sum of the products' sales units.",
        json_schema_extra=field_info(
            "Total Units", "Units Total", kind="integer", sum_of="products.sales_units"
        ),
    )
    total_layers: str = Field(
        max_length=12,
        description="Sum of the products' layers.",
        json_schema_extra=field_info(
            "Total Layers", "Layers Total", kind="integer", sum_of="products.layers"
        ),
    )
    printed_date: str = Field(
        max_length=32,
        description="When the label was printed (mm/dd/yyyy hh:mm).",
        json_schema_extra=field_info(
            "Printed Date",
            "Printed",
            "Print Date",
            "Printed On",
            "Gedruckt",
            "Imprimé le",
            kind="code",
            ocr_pattern=r"^\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}$",
        ),
    )
    page_number: str = Field(
        max_length=24,
        description="Page, e.g. '1 of 2'.",
        json_schema_extra=field_info("Page Number", "Page", kind="code"),
    )


PALLET_LABEL = SchemaSpec(
    name="pallet_label",
    model=PalletLabel,
    prompt="extract Document data in JSON format",
    description="Pallet label / load manifest with product rows (the reference PaliGemma fine-tune's output).",
    version="2",  # 2: strings and the product list are bounded (max_length), so constrained decoding always ends
)
