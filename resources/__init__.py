"""Keel's Dagster resources, each an interface with a local and a production implementation.

``resources.environments`` is the one module that picks the implementations for ``KEEL_ENV``.
"""
