"""Keel's scoring runtime (BentoML): ``predictor.py``, any use case's prediction endpoint, and what
every scoring service shares (admission, API keys, drain, batching, the OpenAPI document, settings,
the 503). A use case with a service of its own keeps it in its folder's ``scorer/`` and builds it on
this runtime (import-linter allows that import, and only that one)."""
