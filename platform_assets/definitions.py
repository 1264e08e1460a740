"""Keel's code location: every definition under ``defs/``, plus the resources of this deployment."""

from pathlib import Path

import dagster as dg

from keel_core.settings import Settings
from platform_assets.components.source import SOURCE_SYSTEM
from resources.environments import environment_definitions


def build(settings: Settings) -> dg.Definitions:
    """The code location bound to ``settings`` (what a ``keel`` command runs in its own process)."""
    folder = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    return dg.Definitions.merge(folder, environment_definitions(settings), source_system(folder, settings))


def source_system(folder: dg.Definitions, settings: Settings) -> dg.Definitions:
    """The source system a source folder declares (``keel.Source``'s ``system``), configured by
    ``settings``, as the ``upstream`` resource that ``fetch_from_source`` asks for days."""
    from keel_core.judging import import_object

    declared = (folder.metadata or {}).get(SOURCE_SYSTEM)
    if declared is None:
        return dg.Definitions()
    system = import_object(declared.value)  # Definitions keep metadata as MetadataValues
    return dg.Definitions(resources={"upstream": system.from_settings(settings)})


@dg.definitions
def defs() -> dg.Definitions:
    return build(Settings())
