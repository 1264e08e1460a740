"""Keel's scoring services (BentoML): ``predictor.py``, any use case's prediction endpoint; ``service.py``,
the payment scorer of the fraud use case (``model.py`` its batched model); and the runtime they share
(admission, API keys, drain, batching, the OpenAPI document, settings, the 503)."""
