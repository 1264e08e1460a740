"""Keel's pure platform library: settings, simulation, contracts, features, training, metrics, the
gate, drift, the online store, Bentos. No Dagster here (import-linter checks it): the scoring
service imports this library alone.
"""
