"""The ``invoice`` schema: a general commercial invoice with parties, line items and totals."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas import field_labels as _labels

__all__ = ["INVOICE", "Invoice", "LineItem", "Party"]


class Party(BaseModel):
    """The seller or the buyer."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Company or person name.", json_schema_extra=_labels("Name"))
    address: str = Field(description="Postal address on one line.", json_schema_extra=_labels("Address"))
    tax_id: str | None = Field(
        default=None,
        description="VAT / tax id when printed.",
        json_schema_extra=_labels("Tax ID", "VAT", "VAT ID"),
    )


class LineItem(BaseModel):
    """One line of the invoice's item table."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(json_schema_extra=_labels("Description", "Item", "Product"))
    quantity: float = Field(json_schema_extra=_labels("Quantity", "Qty"))
    unit_price: float = Field(json_schema_extra=_labels("Unit Price", "Price", "Rate"))
    amount: float = Field(
        description="quantity x unit_price", json_schema_extra=_labels("Amount", "Total", "Line Total")
    )


class Invoice(BaseModel):
    """A commercial invoice."""

    model_config = ConfigDict(extra="forbid")

    invoice_number: str = Field(
        json_schema_extra=_labels("Invoice Number", "Invoice No.", "Invoice #", "Invoice")
    )
    invoice_date: str = Field(
        description="Issue date, ISO yyyy-mm-dd.", json_schema_extra=_labels("Invoice Date", "Date", "Issued")
    )
    due_date: str | None = Field(
        default=None,
        description="Payment due date, ISO yyyy-mm-dd.",
        json_schema_extra=_labels("Due Date", "Due"),
    )
    seller: Party = Field(json_schema_extra=_labels("Seller", "From", "Vendor", "Supplier"))
    buyer: Party = Field(json_schema_extra=_labels("Buyer", "Bill To", "Customer", "Sold To"))
    currency: str = Field(description="ISO 4217 code, e.g. 'EUR'.", json_schema_extra=_labels("Currency"))
    line_items: list[LineItem]
    subtotal: float = Field(json_schema_extra=_labels("Subtotal", "Net"))
    tax: float = Field(json_schema_extra=_labels("Tax", "VAT", "Sales Tax"))
    total: float = Field(json_schema_extra=_labels("Total", "Total Due", "Amount Due"))


INVOICE = SchemaSpec(
    name="invoice",
    model=Invoice,
    prompt="extract invoice data in JSON format",
    description="Commercial invoice: number, dates, seller, buyer, currency, line items, subtotal, tax, total.",
    version="1",
)
