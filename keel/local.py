"""Where a local process keeps Dagster's and BentoML's state: set once, when a ``keel`` process starts.

Dagster and BentoML read their homes from ``DAGSTER_HOME`` and ``BENTOML_HOME``; ``make`` exports
them, and a ``keel`` command run outside ``make`` defaults them the same way, so both see the same
runs and the same model store. Each namespace has its own Dagster instance: its runs, and the
history its sensors read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from keel_core.settings import REPO_ROOT, STATE_DIR, Settings


def dagster_home_for(settings: Settings) -> str:
    """The folder of ``settings.namespace``'s Dagster instance: DAGSTER_HOME when it is this shell's
    namespace (or deployed, where the instance is the deployment's), else its folder in .keel/."""
    home = os.environ.get("DAGSTER_HOME")
    if home and (settings.deployed or settings.namespace == Settings().namespace):
        return home
    return str(STATE_DIR / "dagster" / settings.namespace)


def use_local_homes(settings: Settings) -> None:
    """Process start-up: Dagster's and BentoML's homes, unless the environment names them. A new
    namespace's Dagster home is created as ``make`` creates it (deploy/local/dagster.yaml)."""
    home = Path(dagster_home_for(settings))
    if not settings.deployed and not (home / "dagster.yaml").exists() and home.is_relative_to(STATE_DIR):
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ.setdefault("BENTOML_HOME", str(STATE_DIR / "bentoml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # no usage reporting from a platform's runs
