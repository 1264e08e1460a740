"""Keel's code location: every definition under ``defs/``, plus the resources of this deployment."""

from pathlib import Path

import dagster as dg

from keel_core.settings import Settings
from resources.environments import environment_definitions


def build(settings: Settings) -> dg.Definitions:
    """The code location bound to ``settings`` (what a ``keel`` command runs in its own process)."""
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        environment_definitions(settings),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build(Settings())
