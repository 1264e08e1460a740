"""The layers hold: import contracts (import-linter, [tool.importlinter] in pyproject.toml), and no
module hands state on through ``os.environ``."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("keel_core", "resources", "platform_assets", "keel", "serving")
# Process start-up: the homes Dagster and BentoML read from the environment, set once when a `keel`
# process starts, before either library is used.
START_UP = {"keel/local.py"}


def test_every_import_contract_is_kept():
    lint = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports"))], cwd=REPO, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-2000:]
    assert "0 broken" in lint.stdout


def _environment_writes(tree: ast.AST) -> list[int]:
    """Lines that assign, delete, update or default an ``os.environ`` entry, or call ``os.putenv``."""
    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        for target in targets:
            if isinstance(target, ast.Subscript) and ast.unparse(target.value) == "os.environ":
                lines.append(node.lineno)
        if isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            if called in ("os.putenv", "os.unsetenv") or (
                called.startswith("os.environ.")
                and called.rsplit(".", 1)[1] in ("update", "setdefault", "pop", "clear")
            ):
                lines.append(node.lineno)
    return sorted(lines)


def test_no_module_writes_os_environ_to_hand_state_on():
    writes = {
        f"{path.relative_to(REPO)}:{line}"
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if str(path.relative_to(REPO)) not in START_UP
        for line in _environment_writes(ast.parse(path.read_text()))
    }
    assert not writes, f"os.environ written outside process start-up: {sorted(writes)}"


def test_the_environment_write_detector_sees_every_kind_of_write():
    source = (
        "import os\nos.environ['A'] = '1'\nos.environ.update(B='2')\nos.environ.setdefault('C', '3')\n"
        "del os.environ['A']\nos.putenv('D', '4')\nos.environ.get('E')\n"
    )
    assert _environment_writes(ast.parse(source)) == [2, 3, 4, 5, 6]
