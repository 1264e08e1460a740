"""Shared test setup: tests choose their environment explicitly."""

import pytest

KEEL_SETTINGS = (
    "KEEL_ENV",
    "KEEL_LAKE_ROOT",
    "KEEL_WAREHOUSE_PATH",
    "KEEL_S3_ENDPOINT_URL",
    "KEEL_SIMULATOR_MALFORMED_ROWS_PER_DAY",
)


@pytest.fixture(scope="session", autouse=True)
def _no_inherited_keel_settings():
    """A developer's shell settings must not leak into tests (nor tests write into their .keel/)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in KEEL_SETTINGS:
            patch.delenv(name, raising=False)
        yield
