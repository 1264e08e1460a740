"""The Bento packs the code the service imports: every module of Keel that serving/ reaches."""

import ast
from pathlib import Path

import yaml

from resources.dbt import REPO_ROOT

BENTOFILE = REPO_ROOT / "serving" / "bentofile.yaml"


def keel_imports(path: Path) -> set[str]:
    """The ``keel``/``serving`` modules a file imports, as paths relative to the repository."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] in ("keel", "serving"):
                module = REPO_ROOT / Path(*name.split("."))
                if module.with_suffix(".py").exists():
                    found.add(module.with_suffix(".py").relative_to(REPO_ROOT).as_posix())
    return found


def test_every_module_the_service_imports_is_packed_into_the_bento():
    included = yaml.safe_load(BENTOFILE.read_text())["include"]
    packed = {p.relative_to(REPO_ROOT).as_posix() for pattern in included for p in REPO_ROOT.glob(pattern)}
    reached, todo = set(), [p for p in packed if p.startswith("serving/")]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo.extend(keel_imports(REPO_ROOT / module) - reached)
    assert reached <= packed, sorted(reached - packed)
