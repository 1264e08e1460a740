"""Keel's fraud-scoring service (BentoML): ``service.py`` is the API, ``model.py`` the batched model."""
