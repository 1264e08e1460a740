"""The components Keel provides to a folder's ``defs.yaml``: a model's lifecycle (``use_case.py``)
and a source's tables entering the lake (``source.py``)."""

from platform_assets.components.source import Source
from platform_assets.components.use_case import UseCase

__all__ = ["Source", "UseCase"]
