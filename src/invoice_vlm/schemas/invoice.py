"""The ``invoice`` schema: what every invoice carries (number, date, total) and what many also print.

Version 2 requires only the number, the issue date and the total: receipts and one-line bills print no buyer, no
line items, no subtotal and no tax, and a schema that demands them rejects real documents whose key values are
right. Labels are given in English, French, German, Dutch, Spanish and Italian.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from invoice_vlm.schemas import SchemaSpec
from invoice_vlm.schemas.fields import field_info

__all__ = ["INVOICE", "Invoice", "LineItem", "Party"]

_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"


class Party(BaseModel):
    """The seller or the buyer."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        max_length=200,
        description="Company or person name.",
        json_schema_extra=field_info("Name", "Company", "Firma", "Société", "Naam", "Nombre", "Nome"),
    )
    address: str | None = Field(
        default=None,
        max_length=300,
        description="Postal address on one line.",
        json_schema_extra=field_info("Address", "Adresse", "Anschrift", "Adres", "Dirección", "Indirizzo"),
    )
    tax_id: str | None = Field(
        default=None,
        max_length=40,
        description="VAT / tax id when printed.",
        json_schema_extra=field_info(
            "Tax ID",
            "VAT",
            "VAT ID",
            "VAT No.",
            "USt-IdNr.",
            "USt-ID",
            "Steuernummer",
            "N° TVA",
            "TVA",
            "BTW-nummer",
            "BTW nr",
            "NIF",
            "CIF",
            "P.IVA",
            "Partita IVA",
            "GSTIN",
            kind="code",
        ),
    )


class LineItem(BaseModel):
    """One line of the invoice's item table."""

    model_config = ConfigDict(extra="forbid")

    description: str = Field(
        max_length=300,
        json_schema_extra=field_info(
            "Description",
            "Item",
            "Product",
            "Service",
            "Désignation",
            "Description",
            "Beschreibung",
            "Bezeichnung",
            "Artikel",
            "Leistung",
            "Omschrijving",
            "Descripción",
            "Concepto",
            "Descrizione",
        ),
    )
    quantity: float | None = Field(
        default=None,
        json_schema_extra=field_info(
            "Quantity", "Qty", "Quantité", "Qté", "Menge", "Anzahl", "Aantal", "Cantidad", "Cant.", "Quantità",
            "Qtà", kind="decimal",
        ),
    )  # fmt: skip
    unit_price: float | None = Field(
        default=None,
        json_schema_extra=field_info(
            "Unit Price", "Price", "Rate", "Prix unitaire", "Prix", "P.U.", "Einzelpreis", "Preis", "Stückpreis",
            "Prijs", "Stukprijs", "Precio", "Precio unitario", "Prezzo", "Prezzo unitario", kind="decimal",
        ),
    )  # fmt: skip
    amount: float = Field(
        description="The line's amount as printed (usually quantity x unit_price).",
        json_schema_extra=field_info(
            "Amount", "Line Total", "Total", "Montant", "Betrag", "Gesamtpreis", "Bedrag", "Importe", "Importo",
            kind="decimal",
        ),
    )  # fmt: skip


class Invoice(BaseModel):
    """An invoice, a receipt or a bill."""

    model_config = ConfigDict(extra="forbid")

    invoice_number: str = Field(
        max_length=60,
        json_schema_extra=field_info(kind="code", role="document_number"),
    )  # fmt: skip
    invoice_date: str = Field(
        pattern=_ISO_DATE,
        description="Issue date, ISO yyyy-mm-dd.",
        json_schema_extra=field_info(kind="date", role="issue_date"),
    )  # fmt: skip
    due_date: str | None = Field(
        default=None,
        pattern=_ISO_DATE,
        description="Payment due date, ISO yyyy-mm-dd.",
        json_schema_extra=field_info(
            "Due Date", "Due", "Payment Due", "Date d'échéance", "Échéance", "Fällig am", "Fälligkeitsdatum",
            "Zahlbar bis", "Vervaldatum", "Fecha de vencimiento", "Vencimiento", "Scadenza", "Data scadenza",
            kind="date",
        ),
    )  # fmt: skip
    seller: Party | None = Field(
        default=None,
        json_schema_extra=field_info(role="issuer"),
    )  # fmt: skip
    buyer: Party | None = Field(
        default=None,
        json_schema_extra=field_info(role="recipient"),
    )  # fmt: skip
    currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code, e.g. 'EUR'; read from a symbol beside the amounts when not printed as a field.",
        json_schema_extra=field_info("Currency", "Devise", "Währung", "Valuta", "Moneda", kind="currency"),
    )
    line_items: list[LineItem] | None = Field(default=None, description="Item table rows, in printed order.")
    subtotal: float | None = Field(
        default=None,
        json_schema_extra=field_info(
            "Subtotal", "Sub-total", "Net", "Net Amount", "Total HT", "Sous-total", "Montant HT", "Zwischensumme",
            "Nettobetrag", "Netto", "Summe netto", "Subtotaal", "Totaal excl. BTW", "Base imponible",
            "Subtotale", "Imponibile", kind="decimal", sum_of="line_items.amount", adds_to="total",
        ),
    )  # fmt: skip
    tax: float | None = Field(
        default=None,
        json_schema_extra=field_info(
            "Tax", "VAT", "Sales Tax", "GST", "TVA", "Montant TVA", "MwSt", "MwSt.", "USt", "Umsatzsteuer",
            "BTW", "IVA", "Imposta", kind="decimal", last_page=True, adds_to="total",
        ),
    )  # fmt: skip
    total: float = Field(
        json_schema_extra=field_info(kind="decimal", last_page=True, role="payable"),
    )  # fmt: skip


INVOICE = SchemaSpec(
    name="invoice",
    model=Invoice,
    prompt="extract invoice data in JSON format",
    description="Invoice, receipt or bill: number, date and total; dates, parties, currency, lines, tax if printed.",
    version="2",
    pages="merge",
)
