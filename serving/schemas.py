"""Request and response bodies of the fraud-scoring service (they are its OpenAPI document).

A payment is sent as the lake holds it: the raw facts, no features. Field constraints mirror the
lake's contract (``keel.contracts``), so a payment the pipeline would quarantine is refused here with
a 400 naming the field.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NaiveDatetime, field_validator

from keel.contracts import MAX_AMOUNT

MAX_BATCH = 1000  # transactions per /score_batch request; bigger sets go through /score_file
MAX_ID = 2**63 - 1  # ids are int64 in the lake
# Terminal local time may run up to 14 hours ahead of UTC; a payment later than a day ahead of the
# server's clock is a broken clock or a forged request, and would be scored with stale features.
MAX_CLOCK_AHEAD = timedelta(days=1)
EARLIEST = datetime(2000, 1, 1)  # older is a broken clock (and outside what every engine's types hold)


class Transaction(BaseModel):
    """One card payment to score, as it happens."""

    # Numbers are strict: an id sent as a string or a boolean is a caller's bug, refused, not coerced.
    transaction_id: int = Field(
        strict=True, ge=0, le=MAX_ID, description="the payment's id, echoed back and logged"
    )
    transacted_at: NaiveDatetime = Field(
        description="when the payment happened, terminal local time without a timezone (as in the lake); "
        "from 2000-01-01 to one day ahead of the server's clock"
    )
    customer_id: int = Field(strict=True, ge=0, le=MAX_ID, description="the card's customer")
    terminal_id: int = Field(strict=True, ge=0, le=MAX_ID, description="the payment terminal")
    # 0 is a payment the lake accepts (a card check). ge, not gt: BentoML writes an OpenAPI 3.0
    # document, where a bare exclusiveMinimum is invalid (the fuzz test's generator refused it).
    amount: float = Field(
        strict=True, ge=0, le=MAX_AMOUNT, allow_inf_nan=False, description="amount in the card's currency"
    )

    model_config = ConfigDict(extra="forbid")

    @field_validator("transacted_at", mode="before")
    @classmethod
    def _a_timestamp(cls, value):
        # Lax datetimes would take a number as seconds since 1970, in UTC: not a local time.
        if not isinstance(value, str | datetime):
            raise ValueError("expected an ISO 8601 date and time such as 2026-02-12T09:30:00")
        return value

    @field_validator("transacted_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        latest = datetime.now(UTC).replace(tzinfo=None) + MAX_CLOCK_AHEAD
        if value > latest:
            raise ValueError(
                f"is more than a day ahead of the server's clock (latest accepted: {latest:%Y-%m-%dT%H:%M})"
            )
        if value < EARLIEST:
            raise ValueError(f"is before {EARLIEST:%Y-%m-%d}")
        return value


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
