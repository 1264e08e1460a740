"""Card-fraud detection, Keel's reference use case: one folder, as every use case is.

    defs.yaml      loads definitions.py only (the scorer below is not Dagster's)
    definitions.py the definitions of the modules below
    features.py    the transaction features, one row per payment, as an asset
    transaction_features.py  what each feature is and the one way to compute it, offline and online
                   (pure: the asset above, the online snapshot and the scorer share it)
    training.py    the time-based split, the model and its logistic baseline (pure)
    metrics.py     ROC AUC, average precision and the handbook's card precision@100 (pure)
    gate.py        the promotion gate's policy (pure)
    models.py      train -> evaluation (the gate) -> production_model
    scores.py      the day's payments scored by the production model
    serving.py     online features, the payment scorer's Bento, the prediction log
    monitoring.py  drift reports, feature drift, live performance; sensors.py (retraining)
    jobs.py        retraining and the prediction log's collection
    reproduce.py   `keel reproduce`: train a version again from its record
    scorer/        the payment scorer (BentoML, on Keel's serving runtime): the API, its request and
                   response bodies, the batched model, its bentofile

Its data come from the payments source (``platform_assets/defs/payments``). Its assets are written by
hand while ``keel.UseCase`` (``platform_assets/components``) learns what the payment scorer needs
(request-time features); then this folder's ``defs.yaml`` names ``keel.UseCase`` as
``terminal_volume``'s does. This package imports nothing at all, so that the scorer's Bento can
import ``scorer/`` without Dagster.
"""
