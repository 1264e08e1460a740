"""Where a local process keeps Dagster's and BentoML's state.

Each namespace has its own Dagster instance (its runs, and the history its sensors read): a
``keel`` command opens it and hands it down (``dagster_instance``). BentoML's model store is named
by ``BENTOML_HOME`` only; ``make`` exports it, and a ``keel`` command run outside ``make`` defaults
it the same way when it starts (``use_local_homes``), so both see the same models and Bentos.
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


def dagster_instance(settings: Settings):
    """``settings.namespace``'s Dagster instance, handed to what runs in this process. A new
    namespace's home is created as ``make`` creates it (deploy/local/dagster.yaml)."""
    import dagster as dg

    home = Path(dagster_home_for(settings))
    if not settings.deployed and not (home / "dagster.yaml").exists() and home.is_relative_to(STATE_DIR):
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def use_local_homes() -> None:
    """Process start-up, before BentoML is imported: its model store, unless the environment names
    one. BentoML reads its home only from the environment (it has no other public setting), and
    `bentoml build` and `bentoml serve`, started later, must see the same store."""
    os.environ.setdefault("BENTOML_HOME", str(STATE_DIR / "bentoml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")  # no usage reporting from a platform's runs
