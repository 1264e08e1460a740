"""Keel, as its users touch it: the ``keel`` command, the notebook client, the demos, ``make dev``.

The top layer: it imports every layer below it (the code location ``platform_assets``,
``resources``, the pure library ``keel_core``); nothing imports it.
"""
