"""The platform's calendar: the time zone in which every timestamp of the lake is a wall time.

``KEEL_TIME_ZONE`` (an IANA name, ``UTC`` by default) is read once, by ``resources/environments.py``.
The lake's contract converts a timestamp sent with an offset to this zone and takes one sent without
an offset as wall time here; a day's partition is that day in this zone. The scoring service reads
the same setting (``serving/settings.py``), so both doors judge a timestamp alike.
"""

from zoneinfo import ZoneInfo

import dagster as dg
from pydantic import field_validator

from keel_core import parsing


class Calendar(dg.ConfigurableResource):
    """The platform's time zone (``KEEL_TIME_ZONE``)."""

    time_zone: str = parsing.DEFAULT_TIME_ZONE

    @field_validator("time_zone")
    @classmethod
    def _an_iana_zone(cls, name: str) -> str:
        parsing.time_zone(name)  # raises, naming the value, when it is not a zone
        return name

    @property
    def zone(self) -> ZoneInfo:
        return parsing.time_zone(self.time_zone)
