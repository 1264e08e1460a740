"""Request and response bodies of the fraud-scoring service (they are its OpenAPI document).

A payment is sent as the lake holds it: the raw facts, no features. Field constraints mirror the
lake's contract (``keel.contracts``), so a payment the pipeline would quarantine is refused here with
a 400 naming the field.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NaiveDatetime

from keel.contracts import MAX_AMOUNT

MAX_BATCH = 1000  # transactions per /score_batch request; bigger sets go through /score_file


class Transaction(BaseModel):
    """One card payment to score, as it happens."""

    transaction_id: int = Field(ge=0, description="the payment's id, echoed back and logged")
    transacted_at: NaiveDatetime = Field(
        description="when the payment happened, terminal local time without a timezone (as in the lake)"
    )
    customer_id: int = Field(ge=0, description="the card's customer")
    terminal_id: int = Field(ge=0, description="the payment terminal")
    amount: float = Field(gt=0, le=MAX_AMOUNT, description="amount in the card's currency")

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
