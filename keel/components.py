"""The Dagster components Keel provides, as ``dg list components`` shows them and ``defs.yaml`` names
them (``type: keel.UseCase``, ``type: keel.Source``; ``dg scaffold defs keel.UseCase <name>``)."""

from platform_assets.components import Source, UseCase

__all__ = ["Source", "UseCase"]
