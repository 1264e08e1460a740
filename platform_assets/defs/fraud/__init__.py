"""Card-fraud detection, Keel's reference use case: one folder, as every use case is.

    defs.yaml      the use case, declared (keel.UseCase): rows, label, estimator, metrics, gate,
                   windows, monitoring, serving; the platform builds the assets fraud/...
    transaction_features.py  what each feature is and the one way to compute it, offline (the rows,
                   the labels) and online (the snapshot of cards and terminals, the request features)
    metrics.py     the handbook's card precision@100
    training.py    the baseline: a logistic regression on the standardised features
    scorer/        the payment scorer (BentoML, on Keel's serving runtime): the API, its request and
                   response bodies, the batched model, its bentofile

Its data come from the payments source (``platform_assets/defs/payments``). This package imports
nothing at all, so that the scorer's Bento can import ``scorer/`` without Dagster.
"""
