"""The Dagster components Keel provides, as ``dg list components`` shows them and ``defs.yaml`` names
them (``type: keel.UseCase``; ``dg scaffold defs keel.UseCase <name>``)."""

from platform_assets.components import UseCase

__all__ = ["UseCase"]
