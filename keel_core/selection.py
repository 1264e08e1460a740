"""Model selection that cannot fool itself: estimators and hyper-parameters chosen on later days of
the training window, never on the days the model is judged on.

A use case declares candidates (an estimator, its fixed parameters and a search space) and a
budget of trials. The training window's rows are split in time: the model is fitted on its earlier
days and scored on its last ``validation_days`` (judged as the test days are: the same exclusions),
after a gap of ``gap_days`` when asked (a label delay, say). With ``fit_days``, each trial is fitted
on that many days before the validation days, reaching before the training window when it must:
the fraud-detection handbook's validation, where a trial learns from as many days as the model it
chooses for (on fewer, simpler models win the validation and lose on the test). The declared
estimator is trial 0; then Optuna's TPE sampler proposes a candidate and its parameters for each
further trial, seeded, so the same rows give the same trials (TPE samples at random for its first
10 trials: up to that budget, the search is a seeded random search). The best trial's estimator
and parameters are then fitted on the whole training window by the caller.

Pure module (pandas; optuna and scikit-learn imported inside the functions), no Dagster.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from keel_core import learning
from keel_core.judging import Metric, estimator


@dataclass(frozen=True)
class Space:
    """One hyper-parameter's range: ``choices``, or ``low`` .. ``high`` (``log``, ``step``). Integer
    bounds give integers."""

    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    def __post_init__(self):
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("a search space is either choices or low and high")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"a search space's low ({self.low}) is above its high ({self.high})")

    def suggest(self, trial, name: str):
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)) and (
            self.step is None or float(self.step).is_integer()
        ):
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(name, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass(frozen=True)
class Candidate:
    name: str  # how trials and the model's metadata name it
    class_path: Any
    params: Mapping[str, Any] = field(default_factory=dict)  # fixed
    search: Mapping[str, Space] = field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    number: int
    candidate: str
    params: dict[str, Any]  # fixed and chosen
    score: float  # the selection metric on the validation days
    seconds: float  # fitting and scoring


@dataclass(frozen=True)
class Selection:
    best: Trial
    class_path: Any
    trials: list[Trial]
    metric: str
    fit_days: tuple[date, date]
    validation_days: tuple[date, date]
    validation_rows: int

    @property
    def params(self) -> dict[str, Any]:
        return self.best.params


def split(
    first: date, last: date, validation_days: int, gap_days: int = 0, fit_days: int | None = None
) -> tuple[tuple[date, date], tuple[date, date]]:
    """The fitting days and the validation days of the training window ``first .. last``: fitted on
    the window's days before the validation days, or on ``fit_days`` days (from before ``first``
    when there are more of them than the window has left)."""
    if fit_days is not None and fit_days < 1:
        raise ValueError(f"fit_days is {fit_days}: at least 1")
    validation = (last - timedelta(days=validation_days - 1), last)
    fit_end = validation[0] - timedelta(days=gap_days + 1)
    fit = (first if fit_days is None else fit_end - timedelta(days=fit_days - 1), fit_end)
    if validation_days < 1 or fit[1] < fit[0]:
        raise ValueError(
            f"a training window of {(last - first).days + 1} days leaves no days to fit on before "
            f"{validation_days} validation days and a gap of {gap_days}"
        )
    return fit, validation


def select(
    rows: learning.Rows,
    task: str,
    train: pd.DataFrame,
    window: tuple[date, date],
    declared: Candidate,
    candidates: list[Candidate],
    metric: Metric,
    trials: int,
    validation_days: int,
    gap_days: int = 0,
    seed: int = 0,
    judged: Callable[[pd.DataFrame, date, date], pd.DataFrame] | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    fit_days: int | None = None,
) -> Selection:
    """The best of the declared estimator and ``trials - 1`` proposed ones, by ``metric`` on the
    last days of the training ``window``; ``train`` holds the labelled rows of the fitting and the
    validation days (``split``: with ``fit_days``, some may come before the window)."""
    import optuna

    fit_days_, validation_days_ = split(*window, validation_days, gap_days, fit_days)
    day = pd.to_datetime(train[rows.day])
    fit = train[day.between(pd.Timestamp(fit_days_[0]), pd.Timestamp(fit_days_[1]))]
    validation = train[day.between(pd.Timestamp(validation_days_[0]), pd.Timestamp(validation_days_[1]))]
    if judged is not None:
        validation = judged(validation, *validation_days_)
    for part, frame in (("fitting", fit), ("validation", validation)):
        if frame.empty:
            raise LookupError(f"no labelled rows in the {part} days of the training window {window}")
    by_name = {c.name: c for c in candidates}
    if len(by_name) < len(candidates):
        raise ValueError("two selection candidates have the same name")
    history: list[Trial] = []

    def evaluate(candidate: Candidate, params: dict[str, Any]) -> float:
        started = time.monotonic()
        model = learning.pipeline(rows, estimator(candidate.class_path, params)).fit(fit, fit[rows.label])
        score = metric(learning.scored(rows, model, validation, task))
        if not np.isfinite(score):
            raise ValueError(f"{metric.name} of {candidate.name} {params} on the validation days is {score}")
        done = Trial(len(history), candidate.name, params, score, round(time.monotonic() - started, 3))
        history.append(done)
        if on_trial is not None:
            on_trial(done)
        return score

    evaluate(declared, dict(declared.params))
    if trials > 1 and candidates:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize" if metric.higher_is_better else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
        )

        def objective(trial) -> float:
            candidate = by_name[trial.suggest_categorical("estimator", list(by_name))]
            chosen = {
                name: space.suggest(trial, f"{candidate.name}.{name}")
                for name, space in candidate.search.items()
            }
            return evaluate(candidate, {**candidate.params, **chosen})

        study.optimize(objective, n_trials=trials - 1)
    sign = 1 if metric.higher_is_better else -1
    best = max(history, key=lambda t: (sign * t.score, -t.number))  # ties: the earlier trial
    chosen = declared if best.number == 0 else by_name[best.candidate]
    return Selection(
        best, chosen.class_path, history, metric.name, fit_days_, validation_days_, len(validation)
    )
