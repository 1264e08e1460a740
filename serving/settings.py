"""The scoring service's settings: one typed object, read once per process from the environment.

``.env.example`` lists the variables. ``check()`` runs in ``bentoml serve``'s own process before it
binds a port (the service's deployment hook) and in ``keel serve``: a service that would be unsafe or
broken (no API keys in staging or prod, a missing store, a bad threshold or time zone) never starts,
so a probe never meets a half-alive server; the process exits non-zero with the reason.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from keel_core import parsing

# Bounds of one request. A body is read in full before anything else happens, so it is bounded first.
MAX_JSON_BYTES = 1 << 20  # /score_batch's 1,000 payments take ~150 KB
MAX_FILE_BYTES = 64 << 20  # /score_file's upload (compressed Parquet)
MAX_FILE_ROWS = 1_000_000  # rows of one /score_file
# What the file's payment columns take once decompressed, as its footer declares: a few kilobytes of
# Parquet can decompress to gigabytes (runs of one value compress to almost nothing).
MAX_FILE_DECODED_BYTES = 256 << 20


MIN_KEY_LENGTH = 16
ENVIRONMENTS_THAT_NEED_KEYS = ("staging", "prod")


class SettingsError(RuntimeError):
    """A setting that stops the service from starting."""


@dataclass(frozen=True)
class Settings:
    online_store_url: str
    namespace: str  # whose online features (keys in a shared Redis)
    prediction_log_uri: str
    threshold: float
    time_zone: ZoneInfo  # the platform's: timestamps are judged as the lake judges them
    store_timeout_seconds: float
    store_retry_seconds: float
    max_in_flight: int  # requests a worker takes at once; beyond, 503 overloaded at once
    api_keys: tuple[str, ...]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        def required(name: str) -> str:
            value = environ.get(name)
            if not value:
                raise SettingsError(f"{name} is not set: the service cannot start without it (.env.example)")
            return value

        def number(name: str, default: str, kind=float, low=0.0):
            text = environ.get(name) or default
            try:
                value = kind(text)
            except ValueError:
                raise SettingsError(f"{name}={text!r}: expected a {kind.__name__}") from None
            if not value > low:
                raise SettingsError(f"{name}={text!r}: expected more than {low}")
            return value

        threshold = number("KEEL_DECISION_THRESHOLD", "0.5")
        if threshold > 1:
            raise SettingsError(f"KEEL_DECISION_THRESHOLD={threshold}: expected a probability in (0, 1]")
        name = environ.get("KEEL_TIME_ZONE") or parsing.DEFAULT_TIME_ZONE
        try:
            zone = parsing.time_zone(name)
        except ValueError as error:
            raise SettingsError(f"KEEL_TIME_ZONE: {error}") from None
        keys = api_keys_from_env(environ)
        return cls(
            online_store_url=required("KEEL_ONLINE_STORE_URL"),
            namespace=required("KEEL_NAMESPACE"),
            prediction_log_uri=required("KEEL_PREDICTION_LOG_URI"),
            threshold=threshold,
            time_zone=zone,
            store_timeout_seconds=number("KEEL_ONLINE_STORE_TIMEOUT_SECONDS", "0.5"),
            store_retry_seconds=number("KEEL_ONLINE_STORE_RETRY_SECONDS", "5"),
            max_in_flight=number("KEEL_MAX_IN_FLIGHT", "128", kind=int),
            api_keys=tuple(keys),
        )


def api_keys_from_env(environ: Mapping[str, str] = os.environ) -> list[str]:
    """``KEEL_API_KEYS`` (comma-separated) and the lines of ``KEEL_API_KEYS_FILE`` (``#`` comments).
    Raises when one is too short, or when staging and prod have none."""
    keys = [key.strip() for key in environ.get("KEEL_API_KEYS", "").split(",") if key.strip()]
    if path := environ.get("KEEL_API_KEYS_FILE"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as error:
            raise SettingsError(f"KEEL_API_KEYS_FILE={path}: cannot read it ({error.strerror})") from error
        keys += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if short := [i for i, key in enumerate(keys, 1) if len(key) < MIN_KEY_LENGTH]:
        raise SettingsError(
            f"API keys number {short} are shorter than {MIN_KEY_LENGTH} characters: too easy to guess"
        )
    environment = environ.get("KEEL_ENV", "local")
    if not keys and environment in ENVIRONMENTS_THAT_NEED_KEYS:
        raise SettingsError(
            f"KEEL_ENV={environment}: the scoring service does not start without API keys "
            "(set KEEL_API_KEYS or KEEL_API_KEYS_FILE)"
        )
    return keys


@functools.cache
def settings() -> Settings:
    """This process's settings, read on first use."""
    return Settings.from_env()
