"""How any use case's model is judged: metrics by name, estimators by import path, the gate.

What a use case declares (its ``defs.yaml``) names things; this module turns the names into the
objects that do the work, and judges a challenger against floors, a baseline and the champion:

* a **metric** is a name (``roc_auc``, ``mae``...) or a use case's own function,
  ``package.module:function``, called as ``function(scored)`` on a frame with ``label`` and
  ``prediction`` columns (plus the key columns, for a metric such as card precision that needs
  them). Each metric says whether higher is better, so the gate knows which way is worse;
* an **estimator** is any scikit-learn estimator by its import path with its hyper-parameters,
  ``sklearn.ensemble.HistGradientBoostingRegressor`` + ``{max_iter: 200}``: an unknown class or
  parameter is refused by name before anything is trained;
* the **gate** (``Gate``, ``judge``): floors or ceilings on named metrics, metrics on which the
  challenger must beat the baseline, and a tolerance against the champion per metric.

Pure module (pandas, numpy, scikit-learn imported inside the functions), no Dagster.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from keel_core.promotion import Decision, Rule


@dataclass(frozen=True)
class Metric:
    name: str
    function: Callable[[pd.DataFrame], float]
    higher_is_better: bool
    description: str = ""

    def __call__(self, scored: pd.DataFrame) -> float:
        return float(self.function(scored))

    def better(self, ours: float, theirs: float, by: float = 0.0) -> bool:
        """Whether ``ours`` is better than ``theirs`` by more than ``by`` (or worse by less than -by)."""
        return ours - theirs > by if self.higher_is_better else theirs - ours > by


def _both_classes(scored: pd.DataFrame) -> None:
    positives = int(scored["label"].sum())
    if positives in (0, len(scored)):
        raise ValueError(
            f"cannot judge a classifier on {len(scored):,} rows of which {positives:,} are positive: "
            "the window needs both classes"
        )


def _roc_auc(scored: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    _both_classes(scored)
    return roc_auc_score(scored["label"], scored["prediction"])


def _average_precision(scored: pd.DataFrame) -> float:
    from sklearn.metrics import average_precision_score

    _both_classes(scored)
    return average_precision_score(scored["label"], scored["prediction"])


def _mae(scored: pd.DataFrame) -> float:
    return float(np.mean(np.abs(scored["label"] - scored["prediction"])))


def _rmse(scored: pd.DataFrame) -> float:
    return float(np.sqrt(np.mean((scored["label"] - scored["prediction"]) ** 2)))


def _mape(scored: pd.DataFrame) -> float:
    # Undefined where the truth is 0: those rows are left out (WAPE counts them).
    actual = scored["label"] != 0
    if not actual.any():
        raise ValueError("MAPE of rows whose label is always 0 is undefined")
    rows = scored[actual]
    return float(np.mean(np.abs(rows["label"] - rows["prediction"]) / np.abs(rows["label"])))


def _wape(scored: pd.DataFrame) -> float:
    total = float(np.abs(scored["label"]).sum())
    if total == 0:
        raise ValueError("WAPE of rows whose label is always 0 is undefined")
    return float(np.abs(scored["label"] - scored["prediction"]).sum() / total)


BUILT_IN: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("roc_auc", _roc_auc, True, "area under the ROC curve"),
        Metric("average_precision", _average_precision, True, "area under the precision-recall curve"),
        Metric("mae", _mae, False, "mean absolute error"),
        Metric("rmse", _rmse, False, "root mean squared error"),
        Metric("mape", _mape, False, "mean absolute percentage error, over rows whose label is not 0"),
        Metric("wape", _wape, False, "absolute errors over the sum of absolute labels"),
    )
}


def import_object(path: str) -> Any:
    """``package.module:name`` or ``package.module.Name``: the object it names, or an error naming it."""
    module_name, _, name = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not name:
        raise ValueError(f"{path!r}: expected package.module:name or package.module.Name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{path!r}: cannot import {module_name} ({error})") from None
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"{path!r}: {module_name} has no {name}") from None


def metric(name: str, higher_is_better: bool | None = None, function: Callable | None = None) -> Metric:
    """A built-in metric by name, or a function by import path, or ``function`` found for ``name`` by
    the caller (a module of the use case's folder); then ``higher_is_better`` is required."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" not in name:
        raise ValueError(f"unknown metric {name!r}: one of {', '.join(BUILT_IN)}, or module:function")
    if higher_is_better is None:
        raise ValueError(f"metric {name!r}: say whether higher is better (higher_is_better)")
    return Metric(name.rpartition(":")[2], function or import_object(name), higher_is_better)


def estimator(class_path: Any, params: Mapping[str, Any] | None = None):
    """A fresh scikit-learn estimator from ``class_path`` (an estimator class, a function returning
    an estimator such as a pipeline, or the import path of either) with ``params``. A class's
    parameters are checked against its own, so a typo is refused by name instead of silently ignored;
    a function is called with them, and must return an estimator."""
    made = import_object(class_path) if isinstance(class_path, str) else class_path
    name = class_path if isinstance(class_path, str) else getattr(made, "__name__", repr(made))
    if isinstance(made, type):
        if not hasattr(made, "fit") or not hasattr(made, "get_params"):
            raise ValueError(f"{name!r} is not a scikit-learn estimator (a class with fit and get_params)")
        known = set(made().get_params(deep=False))
        if unknown := sorted(set(params or {}) - known):
            raise ValueError(
                f"{name} has no parameter {', '.join(unknown)} (it has {', '.join(sorted(known))})"
            )
        return made(**(params or {}))
    if not callable(made):
        raise ValueError(f"{name!r} is neither an estimator class nor a function that returns one")
    try:
        built = made(**(params or {}))
    except TypeError as error:
        raise ValueError(f"{name} refuses the parameters {sorted(params or {})}: {error}") from None
    if not hasattr(built, "fit") or not hasattr(built, "get_params"):
        raise ValueError(f"{name} returned {type(built).__name__}, not a scikit-learn estimator")
    return built


@dataclass(frozen=True)
class Gate:
    """When a challenger may replace the champion.

    ``limits``: a floor (higher is better) or a ceiling (lower is better) per metric;
    ``beat_baseline``: metrics on which the challenger must do better than the baseline model;
    ``tolerance``: per metric, how much worse than the champion a challenger may be (the noise of
    retraining on a shifted window, not a real regression).
    """

    limits: Mapping[str, float] = field(default_factory=dict)
    beat_baseline: tuple[str, ...] = ()
    tolerance: Mapping[str, float] = field(default_factory=dict)

    def metrics(self) -> set[str]:
        return set(self.limits) | set(self.beat_baseline) | set(self.tolerance)


def _label(name: str) -> str:
    return name.replace("_", " ")


def judge(
    challenger: Mapping[str, float],
    gate: Gate,
    metrics: Mapping[str, Metric],
    baseline: Mapping[str, float] | None = None,
    champion: Mapping[str, float] | None = None,
) -> Decision:
    """Judge ``challenger``'s metrics (all on the same window as the others') by ``gate``."""
    if missing := sorted(gate.metrics() - set(metrics)):
        raise ValueError(f"the gate names metrics that are not measured: {', '.join(missing)}")
    rules = []
    for name, limit in gate.limits.items():
        ours, m = challenger[name], metrics[name]
        kind = "floor" if m.higher_is_better else "ceiling"
        passed = ours >= limit if m.higher_is_better else ours <= limit
        rules.append(Rule(f"{name}_{kind}", passed, f"{_label(name)} {ours:.4f} vs {kind} {limit:g}"))
    for name in gate.beat_baseline:
        if baseline is None:
            raise ValueError(f"the gate compares {name} with a baseline, and there is none")
        ours, theirs = challenger[name], baseline[name]
        rules.append(
            Rule(
                f"{name}_beats_baseline",
                metrics[name].better(ours, theirs),
                f"{_label(name)} {ours:.4f} vs baseline {theirs:.4f}",
            )
        )
    if champion is not None:
        for name, tolerance in gate.tolerance.items():
            ours, theirs = challenger[name], champion[name]
            rules.append(
                Rule(
                    f"{name}_vs_champion",
                    not metrics[name].better(theirs, ours, by=tolerance),
                    f"{_label(name)} {ours:.4f} vs champion {theirs:.4f} (tolerance {tolerance:g})",
                )
            )
    return Decision(all(rule.passed for rule in rules), tuple(rules))
