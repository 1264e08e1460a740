"""Keel's top layer: the ``keel`` command, the notebook client, the demos and ``make dev``.

It imports every layer below it (the code location ``platform_assets``, ``resources``, the pure
library ``keel``); nothing imports it.
"""
