"""Alerts: where failures that need a person go. A webhook in production, the log locally.

The webhook receives a JSON body with ``text`` (what Slack and Mattermost incoming webhooks show)
and the structured fields (title, severity, link, details) for anything smarter behind it.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from abc import abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg

logger = logging.getLogger("keel.alerts")


@dataclass(frozen=True)
class Alert:
    title: str
    text: str
    severity: str = "error"  # error or warning
    link: str | None = None  # where to look (a Dagster run, a report)
    details: dict[str, Any] = field(default_factory=dict)

    def as_text(self) -> str:
        link = f"\n{self.link}" if self.link else ""
        return f"[keel {self.severity}] {self.title}\n{self.text}{link}"


class AlertError(RuntimeError):
    """An alert that could not be delivered (the sensor's tick fails and it is sent again)."""


class Alerts(dg.ConfigurableResource):
    @abstractmethod
    def send(self, alert: Alert) -> None: ...


class LogAlerts(Alerts):
    """Alerts as log lines (logger ``keel.alerts``): the local environment, and the daemon's output."""

    def send(self, alert: Alert) -> None:
        logger.log(logging.ERROR if alert.severity == "error" else logging.WARNING, alert.as_text())


class WebhookAlerts(Alerts):
    """Alerts POSTed as JSON to a webhook (Slack-compatible ``text``); a failed POST raises."""

    url: str
    timeout_seconds: float = 10.0

    def send(self, alert: Alert) -> None:
        body = json.dumps({**asdict(alert), "text": alert.as_text()}, default=str).encode()
        request = urllib.request.Request(
            self.url, data=body, headers={"content-type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                status = response.status
        except OSError as error:  # URLError, HTTPError and timeouts are all OSErrors
            raise AlertError(f"alert {alert.title!r} not delivered to the webhook: {error}") from error
        if not 200 <= status < 300:
            raise AlertError(f"alert {alert.title!r} not delivered: the webhook answered {status}")
