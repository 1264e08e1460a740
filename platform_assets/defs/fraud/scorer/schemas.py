"""Request and response bodies of the fraud-scoring service (they are its OpenAPI document).

A payment is sent as the lake holds it: the raw facts, no features. Every field is judged by the
lake's own rules (the payments source's contract, ``keel_core.parsing``), so a payment the pipeline would
quarantine for its form is refused here with a 400 naming the field, and the document states exactly what is
accepted: every body it admits is scored, every body it does not admit is refused.

``transacted_at`` is ISO 8601 text (``keel_core.parsing.TIMESTAMP``, published as the field's pattern):
with an offset it is converted to the platform's time zone, without one it is wall time there, as
in the lake. The model keeps the value as parsed (aware or naive); the service converts it with the
zone it was configured with (``KEEL_TIME_ZONE``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema

from keel_core import parsing
from keel_core.contracts import MAX_ID, MIN_ID

MAX_BATCH = 1000  # transactions per /score_batch request; bigger sets go through /score_file
# The payment's facts and their bounds, as the payments source's contract declares them
# (platform_assets/defs/payments/defs.yaml; a test checks they agree): a payment the lake would
# quarantine for its form is refused here.
PAYMENT_COLUMNS = {
    "transaction_id": "integer",
    "transacted_at": "timestamp",
    "customer_id": "integer",
    "terminal_id": "integer",
    "amount": "decimal",
}
MIN_AMOUNT, MAX_AMOUNT = 0.0, 100_000.0


def _timestamp(value, info: ValidationInfo) -> datetime:
    """ISO 8601 text, parsed as sent (aware with an offset, else naive); validated with a ``zone`` in
    its context (the service's admission does), the wall time there, refused in a daylight-saving gap."""
    if not isinstance(value, str):  # a number would be read as seconds since 1970: not a wall time
        raise ValueError(f"expected text: {parsing.TIMESTAMP_FORM}")
    return parsing.parse_timestamp(value, (info.context or {}).get("zone"))


Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": parsing.ecma(parsing.TIMESTAMP),
            "description": f"{parsing.TIMESTAMP_FORM}: with an offset, converted to the platform's time "
            "zone; without, wall time there (as in the lake)",
        }
    ),
]
Id = Annotated[int, Field(strict=True, ge=MIN_ID, le=MAX_ID)]


class Transaction(BaseModel):
    """One card payment to score, as it happens."""

    # Numbers are strict: an id sent as a string or a boolean is a caller's bug, refused, not coerced.
    transaction_id: Id = Field(description="the payment's id, echoed back and logged")
    transacted_at: Timestamp
    customer_id: Id = Field(description="the card's customer")
    terminal_id: Id = Field(description="the payment terminal")
    # 0 is a payment the lake accepts (a card check). ge, not gt: BentoML writes an OpenAPI 3.0
    # document, where a bare exclusiveMinimum is invalid (the fuzz test's generator refused it).
    amount: float = Field(
        strict=True,
        ge=MIN_AMOUNT,
        le=MAX_AMOUNT,
        allow_inf_nan=False,
        description="amount in the card's currency",
    )

    model_config = ConfigDict(extra="forbid")


Transactions = Annotated[list[Transaction], Field(min_length=1, max_length=MAX_BATCH)]


class Score(BaseModel):
    """The model's answer for one payment."""

    transaction_id: int
    fraud_probability: float = Field(ge=0, le=1)
    decision: Literal["approve", "decline"] = Field(
        description="decline when fraud_probability is at or above the threshold"
    )
    threshold: float = Field(ge=0, le=1)
    model_version: str = Field(description="the registry tag of the model that scored it")
    feature_snapshot_date: date = Field(
        description="the day whose close the customer and terminal features describe"
    )
    customer_is_new: bool = Field(description="the customer has no history in the snapshot: defaults used")
    terminal_is_new: bool = Field(description="the terminal has no history in the snapshot: defaults used")


class FieldError(BaseModel):
    """What is wrong with one field: where (``loc``), what (``msg``), the kind of error (``type``)."""

    loc: list[str | int]
    msg: str
    type: str


class Refusal(BaseModel):
    """The body of every refusal (4xx) and of every 5xx: what is wrong, and per field where it applies."""

    error: str
    detail: list[FieldError] | None = None
