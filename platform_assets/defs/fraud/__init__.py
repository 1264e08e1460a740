"""Card-fraud detection, Keel's reference use case: one folder, as every use case is.

    features.py    the transaction features, one row per payment (the SQL is keel_core.features,
                   which the scoring service shares)
    training.py    the time-based split, the model and its logistic baseline (pure)
    metrics.py     ROC AUC, average precision and the handbook's card precision@100 (pure)
    gate.py        the promotion gate's policy (pure)
    models.py      train -> evaluation (the gate) -> production_model
    scores.py      the day's payments scored by the production model
    serving.py     online features, the payment scorer's Bento, the prediction log
    monitoring.py  drift reports, feature drift, live performance; checks.py and sensors.py
    reproduce.py   `keel reproduce`: train a version again from its record

Its assets are written by hand while ``keel.UseCase`` (``platform_assets/components``) learns what
the payment scorer needs (request-time features); then this folder becomes a ``defs.yaml`` like
``terminal_volume``'s.
"""
