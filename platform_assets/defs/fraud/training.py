"""The fraud model's yardstick: a logistic regression on the standardised features.

A factory the spec's ``baseline`` names (``training:scaled_logistic``): the platform puts it behind
the feature selector and fits it on the same rows as the model. Pure module: scikit-learn, imported
when a baseline is made, so that loading the code location stays light.
"""


def scaled_logistic(**params):
    """A scaled logistic regression; ``params`` are the regression's (``max_iter``, ``C``...)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("classifier", LogisticRegression(**params))])
