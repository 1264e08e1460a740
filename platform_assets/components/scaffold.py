"""A new use case's folder, ready to run: what `dg scaffold defs keel.UseCase <name>` and
`keel new model <name>` write. The template (``template/``) is a working use case on the demo's data;
a data scientist changes its question from there."""

import re
from pathlib import Path

import dagster as dg

TEMPLATE = Path(__file__).with_name("template")
FILES = ("defs.yaml", "features.py")


def write_use_case(folder: Path, name: str) -> list[Path]:
    """The template's files in ``folder``, named ``name``; refuses to overwrite anything."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
        raise ValueError(
            f"use case {name!r}: expected a lowercase Python identifier (it names assets and tables)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    if taken := [f for f in FILES if (folder / f).exists()]:
        raise FileExistsError(f"{folder} already has {', '.join(taken)}: choose another name or folder")
    written = []
    for file in FILES:
        (folder / file).write_text((TEMPLATE / file).read_text().replace("__NAME__", name))
        written.append(folder / file)
    return written


class UseCaseScaffolder(dg.Scaffolder):
    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        write_use_case(Path(request.target_path), Path(request.target_path).name)
