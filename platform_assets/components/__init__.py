"""The components Keel provides to a use case's folder (``defs.yaml``): see ``use_case.py``."""

from platform_assets.components.use_case import UseCase

__all__ = ["UseCase"]
