"""Shared test setup: tests choose their environment explicitly."""

import pytest

KEEL_SETTINGS = (
    "KEEL_ENV",
    "KEEL_LAKE_ROOT",
    "KEEL_WAREHOUSE_PATH",
    "KEEL_S3_ENDPOINT_URL",
    "KEEL_SIMULATOR_MALFORMED_ROWS_PER_DAY",
    "KEEL_SIMULATOR_CUSTOMERS",
    "KEEL_SIMULATOR_TERMINALS",
    "KEEL_USER",
)


@pytest.fixture(scope="session", autouse=True)
def _no_inherited_keel_settings(tmp_path_factory):
    """A developer's shell settings must not leak into tests (nor tests write into their .keel/).

    BentoML reads its home once per process, so the whole session shares one store in a temporary
    folder; each test's registry lives in its own lake, and the store is only a local copy.
    """
    with pytest.MonkeyPatch.context() as patch:
        for name in KEEL_SETTINGS:
            patch.delenv(name, raising=False)
        patch.setenv("BENTOML_HOME", str(tmp_path_factory.mktemp("bentoml")))
        patch.setenv("DAGSTER_HOME", str(tmp_path_factory.mktemp("dagster_home")))
        patch.setenv("BENTOML_DO_NOT_TRACK", "true")
        yield
