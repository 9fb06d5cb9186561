"""Values both built-in samplers draw from: a start date, product nouns, Faker."""

from __future__ import annotations

from datetime import date
from typing import Any

from invoice_vlm.errors import MissingDependencyError

__all__ = ["EPOCH", "PRODUCT_NOUNS", "make_faker", "one_line"]

EPOCH = date(
    2023, 1, 1
)  # dates come from a fixed window, never from today: a seed gives the same data on any day
PRODUCT_NOUNS = (
    "METAL WIRE",
    "STEEL PIPE",
    "COPPER SHEET",
    "PLASTIC CRATE",
    "PAPER TOWEL",
    "SPRING WATER",
    "ORANGE JUICE",
    "DISH SOAP",
    "OFFICE CHAIR",
    "DESK LAMP",
    "POWER CABLE",
    "HEX BOLT",
    "WOOD SCREW",
    "GLASS PANEL",
    "AIR FILTER",
    "WATER PUMP",
    "BALL VALVE",
    "PACKING TAPE",
    "SHIPPING LABEL",
    "CANNED TOMATO",
    "RICE BAG",
    "COFFEE BEAN",
    "DOG FOOD",
    "MOTOR OIL",
    "PAINT BUCKET",
    "FLOOR TILE",
    "LED BULB",
    "HAND SANITIZER",
)


def make_faker(seed: int) -> Any:
    """A Faker for US names and addresses, seeded."""
    try:
        from faker import Faker
    except ImportError:
        raise MissingDependencyError("The synthetic data generator", "data", "faker") from None
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return fake


def one_line(address: str) -> str:
    """A multi-line postal address on one line, parts joined by commas."""
    return ", ".join(part.strip() for part in address.splitlines() if part.strip())
