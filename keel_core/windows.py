"""The days a model is trained and tested on: any use case's time-based split.

Pure module, no Dagster.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta


@dataclass(frozen=True)
class TrainingWindow:
    """Train on [train_start, train_end], skip a gap, test on [test_start, test_end].

    The gap is the label delay: a model trained at the end of the train period is used for
    ``gap`` days before any label of that period could show how it does, so the test period starts
    where a deployed model would actually be judged.
    """

    train_start: date
    train_end: date
    test_start: date
    test_end: date

    @classmethod
    def ending(
        cls, last_labelled_day: date, train_days: int, gap_days: int, test_days: int
    ) -> TrainingWindow:
        if min(train_days, test_days) < 1 or gap_days < 0:
            raise ValueError(
                f"train_days={train_days} and test_days={test_days} must be at least 1, "
                f"gap_days={gap_days} at least 0"
            )
        test_start = last_labelled_day - timedelta(days=test_days - 1)
        train_end = test_start - timedelta(days=gap_days + 1)
        return cls(train_end - timedelta(days=train_days - 1), train_end, test_start, last_labelled_day)

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name).isoformat() for name in self.__dataclass_fields__}

    @staticmethod
    def days_needed(train_days: int, gap_days: int, test_days: int, label_delay_days: int) -> int:
        """Days of data a window needs, counting the label delay before the last labelled day."""
        return train_days + gap_days + test_days + label_delay_days
