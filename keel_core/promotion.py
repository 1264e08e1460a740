"""A promotion gate's verdict: the rules it applied, each passed or not, and the summary it records.

Pure module, no Dagster. ``keel_core.judging.judge`` reaches it for any use case's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Decision:
    promote: bool
    rules: tuple[Rule, ...]

    @property
    def summary(self) -> str:
        failed = [rule.detail for rule in self.rules if not rule.passed]
        if failed:
            return "refused: " + "; ".join(failed)
        return "approved: " + "; ".join(rule.detail for rule in self.rules)
