"""Keel, as its users touch it: the ``keel`` command, the notebook client, the demos, ``make dev``.

The top layer: it imports every layer below it (the code location ``platform_assets``,
``resources``, the pure library ``keel_core``); nothing imports it.
"""


def __getattr__(name: str):
    # ``type: keel.UseCase`` or ``keel.Source`` in a defs.yaml: the component, imported only when
    # asked for, so that the command line (`keel --help`) does not pay for Dagster.
    if name in ("Source", "UseCase"):
        from keel import components

        return getattr(components, name)
    raise AttributeError(f"module 'keel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "Source", "UseCase"]  # what `dg list components` looks through
