"""Keel, as its users touch it: the ``keel`` command, the notebook client, the demos, ``make dev``.

The top layer: it imports every layer below it (the code location ``platform_assets``,
``resources``, the pure library ``keel_core``); nothing imports it.
"""


def __getattr__(name: str):
    # ``type: keel.UseCase`` in a defs.yaml: the component, imported only when asked for, so that the
    # command line (`keel --help`) does not pay for Dagster.
    if name == "UseCase":
        from keel.components import UseCase

        return UseCase
    raise AttributeError(f"module 'keel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "UseCase"]  # what `dg list components` looks through
