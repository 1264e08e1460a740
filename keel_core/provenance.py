"""Where a result came from: the code's git commit, the dependency lockfile, and who ran it.

Pure module, no Dagster. Images built for a cluster have no ``.git``: the build passes the commit
in ``KEEL_GIT_COMMIT`` (see deploy/), and a run records where its answer came from.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCKFILE = REPO_ROOT / "uv.lock"


def code_version() -> dict[str, str | bool]:
    """``git_commit``, ``git_dirty`` (uncommitted changes to tracked files) and ``source``."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return {"git_commit": commit, "git_dirty": bool(dirty), "source": "git"}
    except (OSError, subprocess.CalledProcessError):
        baked = os.environ.get("KEEL_GIT_COMMIT")
        if baked:
            return {"git_commit": baked, "git_dirty": False, "source": "KEEL_GIT_COMMIT"}
        raise RuntimeError(
            f"cannot tell which code this is: {REPO_ROOT} is not a git checkout "
            "and KEEL_GIT_COMMIT is not set"
        ) from None


def lockfile_sha256() -> str:
    if not LOCKFILE.exists():
        raise RuntimeError(f"no lockfile at {LOCKFILE}: the dependency versions cannot be recorded")
    return hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()


def dbt_manifest_sha256() -> str:
    """The dbt manifest the run's warehouse models came from (what dbt compiled, not just the SQL)."""
    manifest = REPO_ROOT / ".keel" / "dbt" / "target" / "manifest.json"
    if not manifest.exists():
        raise RuntimeError(
            f"no dbt manifest at {manifest}: `make .keel/dbt/target/manifest.json` prepares it"
        )
    return hashlib.sha256(manifest.read_bytes()).hexdigest()


def current_user() -> str:
    return os.environ.get("KEEL_USER") or getpass.getuser()
