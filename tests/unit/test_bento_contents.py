"""Each Bento packs the code its service imports: every module of Keel that the service reaches, and
the packages they are in. Bentofiles: the shared predictor's (serving/) and a use case's own scorer's
(in its folder)."""

import ast
from pathlib import Path

import pytest
import yaml

from resources.dbt import REPO_ROOT

BENTOFILES = sorted(
    [
        *(REPO_ROOT / "serving").glob("*bentofile.yaml"),
        *(REPO_ROOT / "platform_assets" / "defs").glob("*/**/bentofile.yaml"),
    ]
)
PACKAGES = ("keel", "keel_core", "serving", "platform_assets")


def keel_imports(path: Path) -> set[str]:
    """The modules of Keel's packages a file imports, as paths relative to the repository."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                module = REPO_ROOT / Path(*name.split("."))
                if module.with_suffix(".py").exists():
                    found.add(module.with_suffix(".py").relative_to(REPO_ROOT).as_posix())
    return found


@pytest.mark.parametrize("bentofile", BENTOFILES, ids=lambda path: path.relative_to(REPO_ROOT).as_posix())
def test_every_module_the_service_imports_is_packed_into_the_bento(bentofile):
    config = yaml.safe_load(bentofile.read_text())
    packed = {
        p.relative_to(REPO_ROOT).as_posix() for pattern in config["include"] for p in REPO_ROOT.glob(pattern)
    }
    service = config["service"].partition(":")[0].replace(".", "/") + ".py"
    assert service in packed
    reached, todo = set(), [service]
    while todo:
        module = todo.pop()
        if module in reached:
            continue
        reached.add(module)
        todo.extend(keel_imports(REPO_ROOT / module) - reached)
    packages = {
        (Path(module).parents[i] / "__init__.py").as_posix()
        for module in reached
        for i in range(len(Path(module).parents) - 1)
    }
    assert reached | packages <= packed, sorted((reached | packages) - packed)


def test_the_payment_scorers_bento_is_found():
    assert "platform_assets/defs/fraud/scorer/bentofile.yaml" in [
        b.relative_to(REPO_ROOT).as_posix() for b in BENTOFILES
    ]
