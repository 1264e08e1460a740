"""Keel's code location: every definition under ``defs/``, plus the resources of this environment."""

from pathlib import Path

import dagster as dg

from resources.environments import environment_definitions


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).parent),
        environment_definitions(),
    )
