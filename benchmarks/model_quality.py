"""`make bench-model`: Keel's fraud model judged as the fraud-detection handbook judges its baselines.

The handbook ("Reproducible Machine Learning for Credit Card Fraud Detection", baseline chapter)
simulates 5,000 customers and 10,000 terminals for 183 days from 2018-04-01, trains on the 7 days
from 2018-07-25, leaves a 7-day delay and tests on the 7 days after it (2018-08-08 .. 08-14). Its
test set leaves out the cards whose fraud was known before the day (blocked in practice), and its
best figures are ROC AUC 0.871 (logistic regression), average precision 0.658 (random forest) and
card precision@100 0.291 (logistic regression).

This bench runs that protocol through Keel itself, once per simulator seed, each seed in a world of
its own (a child process with its own lake, warehouse, Dagster home, MLflow store and calendar):
the simulator's days land, then one run of every asset up to ``fraud/production_model``: ingestion
with its contracts, the dbt warehouse, the feature table, training with the use case's own model
selection (on the training window's last days), the promotion gate. The figures are the model
asset's own (the field's test rule is the use case's ``judging``) beside the logistic baseline it
trains on the same rows. Results: ``benchmarks/results/model_quality.json``, with the date and the
machine.

The published figures come from one simulated world (the handbook's seed); another seed's world is
easier or harder. So each seed also fits the handbook's own baselines, its logistic regression and
its random forest on its 15 features (Keel computes the same ones), on the same training rows, judged
on the same test rows: the comparison that says whether Keel beats the handbook on equal data.
"""

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".keel" / "bench_model"
RESULTS = REPO / "benchmarks" / "results" / "model_quality.json"
sys.path.insert(0, str(REPO))
from benchmarks.data_path import machine  # noqa: E402

WORLD_START = date(2018, 4, 1)
WORLD_DAYS = 183
TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = date(2018, 7, 25), 7, 7, 7
TEST_END = TRAIN_START + timedelta(days=TRAIN_DAYS + DELAY_DAYS + TEST_DAYS - 1)  # 2018-08-14
# The flags about the test week's payments are reported a label delay later: the last day landed.
LAST_DAY = TEST_END + timedelta(days=DELAY_DAYS)
SEEDS = (1, 2, 3, 4, 5)
METRICS = ("roc_auc", "average_precision", "card_precision_at_100")
PUBLISHED = {"roc_auc": 0.871, "average_precision": 0.658, "card_precision_at_100": 0.291}
NAMESPACE = "bench_model"
# The handbook's features (its baseline chapter's input_features), by Keel's names, and its baselines
# as it fits them: on standardised features, a logistic regression and a random forest of 100 trees
# of depth 20.
HANDBOOK_FEATURES = (
    "amount",
    "is_weekend",
    "is_night",
    "customer_transactions_1d",
    "customer_mean_amount_1d",
    "customer_transactions_7d",
    "customer_mean_amount_7d",
    "customer_transactions_30d",
    "customer_mean_amount_30d",
    "terminal_transactions_1d",
    "terminal_fraud_rate_1d",
    "terminal_transactions_7d",
    "terminal_fraud_rate_7d",
    "terminal_transactions_30d",
    "terminal_fraud_rate_30d",
)
HANDBOOK_MODELS = {
    "handbook_logistic": ("sklearn.linear_model.LogisticRegression", {"random_state": 0, "max_iter": 1000}),
    "handbook_forest": (
        "sklearn.ensemble.RandomForestClassifier",
        {"max_depth": 20, "n_estimators": 100, "random_state": 0, "n_jobs": -1},
    ),
}
SIDES = {
    "model": "Keel",
    "logistic_baseline": "  Keel's logistic",
    "handbook_logistic": "  handbook logistic",
    "handbook_forest": "  handbook forest",
}


def _environment(seed: int) -> dict[str, str]:
    """A seed's world: nothing inherited from the shell's Keel settings, all its state in its folder."""
    root = STATE / f"seed_{seed}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "DAGSTER_", "DBT_", "BENTOML_"))}
    env.update(
        KEEL_ENV="local",
        KEEL_NAMESPACE=NAMESPACE,
        KEEL_LAKE_ROOT=str(root / "lake"),
        KEEL_WAREHOUSE_DIR=str(root / "warehouse"),
        KEEL_ONLINE_STORE_URL=f"sqlite:///{root / 'online.sqlite'}",
        KEEL_MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
        KEEL_CALENDAR_START=WORLD_START.isoformat(),
        KEEL_CALENDAR_END=(WORLD_START + timedelta(days=WORLD_DAYS - 1)).isoformat(),
        KEEL_SIMULATOR_SEED=str(seed),
        KEEL_SIMULATOR_CUSTOMERS="5000",
        KEEL_SIMULATOR_TERMINALS="10000",
        DAGSTER_HOME=str(root / "dagster"),
        BENTOML_HOME=str(root / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        PYTHONHASHSEED="0",
    )
    return env


def run_seed(seed: int) -> dict:
    """One seed, in a child process (the calendar is built once per process); what it measured."""
    root = STATE / f"seed_{seed}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "dagster").mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "local" / "dagster.yaml", root / "dagster" / "dagster.yaml")
    report, log = root / "report.json", root / "run.log"
    with log.open("w") as output:
        child = subprocess.run(
            [sys.executable, __file__, "child", str(seed), str(report)],
            env=_environment(seed),
            cwd=REPO,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    if child.returncode != 0 or not report.exists():
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(f"seed {seed} failed (exit {child.returncode}); log {log}:\n{tail}")
    return json.loads(report.read_text())


def child(seed: str, report: str) -> int:
    """Land the seed's world up to LAST_DAY, then run the assets up to fraud's production model."""
    from keel.local import use_local_homes

    use_local_homes()
    import dagster as dg

    from keel_core.settings import Settings
    from platform_assets.definitions import build
    from platform_assets.partitions import daily_partitions

    began = time.perf_counter()
    settings = Settings()
    definitions = build(settings)
    landing, upstream = definitions.resources["landing"], definitions.resources["upstream"]
    days = [WORLD_START + timedelta(days=i) for i in range((LAST_DAY - WORLD_START).days + 1)]
    landing.deliver_missing(upstream, days)
    landed = time.perf_counter() - began

    production = dg.AssetKey(["fraud", "production_model"])
    job = dg.define_asset_job(
        "bench_model",
        # The sources and the warehouse (its tests read the reference marts), then fraud to the gate.
        selection=dg.AssetSelection.groups("lake", "warehouse")
        | dg.AssetSelection.assets(production).upstream().required_multi_asset_neighbors(),
        partitions_def=daily_partitions,
    )
    job = dg.Definitions.merge(definitions, dg.Definitions(jobs=[job])).resolve_job_def("bench_model")
    window = {"train_days": TRAIN_DAYS, "test_days": TEST_DAYS, "last_labelled_day": TEST_END.isoformat()}
    started = time.perf_counter()
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        tags={
            "dagster/asset_partition_range_start": days[0].isoformat(),
            "dagster/asset_partition_range_end": days[-1].isoformat(),
        },
        raise_on_error=False,
        run_config={
            "loggers": {"console": {"config": {"log_level": "ERROR"}}},
            "ops": {"fraud__model": {"config": window}},
        },
    )
    if not result.success:
        failures = [
            f"{event.step_key}: {event.event_specific_data.error.message}"
            for event in result.all_events
            if event.event_type_value == "STEP_FAILURE"
        ]
        raise RuntimeError(f"seed {seed}: the run failed: {failures}")
    metadata = {
        event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
        for event in result.get_asset_materialization_events()
        if event.asset_key.path[0] == "fraud" and event.asset_key.path[-1] != "features"
    }
    model, evaluation = metadata["fraud/model"], metadata["fraud/evaluation"]
    production_model = metadata.get("fraud/production_model", {})
    if (model["train_start"], model["test_end"]) != (TRAIN_START.isoformat(), TEST_END.isoformat()):
        raise RuntimeError(f"seed {seed}: trained {model['train_start']} .. tested to {model['test_end']}")
    handbook = handbook_baselines(definitions.resources["warehouse"], model["test_rows"])
    Path(report).write_text(
        json.dumps(
            {
                "seed": int(seed),
                "model": {m: model[m] for m in METRICS},
                "logistic_baseline": {m: model[f"baseline_{m}"] for m in METRICS},
                **handbook,
                "estimator": model["estimator"],
                "selected_trial": model.get("selected_trial"),
                f"validation_{model.get('selection_metric')}": model.get(
                    f"validation_{model.get('selection_metric')}"
                ),
                "train_rows": model["train_rows"],
                "test_rows": model["test_rows"],
                "excluded_known_positive_test_rows": model.get("excluded_known_positive_test_rows"),
                "gate": evaluation["decision"],
                "promoted": bool(production_model.get("promoted")),
                "model_tag": model["model_tag"],
                "landing_seconds": round(landed, 1),
                "run_seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    return 0


def handbook_baselines(warehouse, test_rows: int) -> dict:
    """The handbook's baselines fitted on the training rows the model was, judged on its test rows."""
    import sklearn.pipeline
    import sklearn.preprocessing

    from keel_core import judging, learning
    from platform_assets.components.plan import Plan
    from platform_assets.components.use_case import declared

    plan = Plan.of(*declared()["fraud"])
    test_start = TEST_END - timedelta(days=TEST_DAYS - 1)
    with warehouse.connect() as connection:
        train = plan.labelled_rows(connection, TRAIN_START, TRAIN_START + timedelta(days=TRAIN_DAYS - 1))
        test = plan.labelled_rows(connection, test_start, TEST_END)
        test = plan.judged(connection, test, test_start, TEST_END, since=TRAIN_START)
    if len(test) != test_rows:  # the same rule on the same rows, or the comparison is not paired
        raise RuntimeError(f"the handbook's test set has {len(test)} rows, the model's {test_rows}")
    rows = dataclasses.replace(plan.rows, features=HANDBOOK_FEATURES)
    measured = {}
    for name, (class_path, params) in HANDBOOK_MODELS.items():
        scaled = sklearn.pipeline.make_pipeline(
            sklearn.preprocessing.StandardScaler(), judging.estimator(class_path, params)
        )
        fitted = learning.pipeline(rows, scaled).fit(train, train[rows.label])
        measured[name] = learning.measure(learning.scored(rows, fitted, test, plan.spec.task), plan.metrics)
    return measured


def summary(seeds: list[dict]) -> dict:
    """Mean and sample standard deviation per metric of each side; whether Keel beats the published
    figures, and the handbook's baselines on the same worlds (their better one per metric)."""

    def spread(side: str) -> dict:
        values = {m: [s[side][m] for s in seeds] for m in METRICS}
        return {
            m: {
                "mean": round(statistics.mean(v), 4),
                "sd": round(statistics.stdev(v), 4) if len(v) > 1 else None,
            }
            for m, v in values.items()
        }

    sides = {side: spread(side) for side in SIDES}
    model = sides["model"]
    handbook_best = {m: max(sides[h][m]["mean"] for h in HANDBOOK_MODELS) for m in METRICS}
    return {
        **sides,
        "beats_published": {m: model[m]["mean"] > PUBLISHED[m] for m in METRICS},
        "handbook_best": handbook_best,
        "beats_handbook": {m: model[m]["mean"] > handbook_best[m] for m in METRICS},
        "promoted_seeds": sum(s["promoted"] for s in seeds),
    }


def table(results: dict) -> str:
    heads = ("ROC AUC", "AP", "CP@100")
    rows = [f"{'':<28}" + "".join(f"{h:>17}" for h in heads)]
    for s in results["seeds"]:
        for side, label in SIDES.items():
            label = f"seed {s['seed']}: {label}" if side == "model" else label
            rows.append(f"{label:<28}" + "".join(f"{s[side][m]:>17.4f}" for m in METRICS))
    for side, label in SIDES.items():
        stats = results["summary"][side]
        rows.append(
            f"{label.strip() + ', mean ± sd':<28}"
            + "".join(f"{stats[m]['mean']:>10.4f} ± {stats[m]['sd'] or 0:.3f}" for m in METRICS)
        )
    done = results["summary"]
    for label, figures, beats in (
        ("published best (handbook)", PUBLISHED, done["beats_published"]),
        ("handbook, these worlds", done["handbook_best"], done["beats_handbook"]),
    ):
        rows.append(f"{label:<28}" + "".join(f"{figures[m]:>17.4f}" for m in METRICS))
        verdicts = ("yes" if beats[m] else "NO" for m in METRICS)
        rows.append(f"{'  Keel beats it':<28}" + "".join(f"{v:>17}" for v in verdicts))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    began = time.perf_counter()
    print(
        f"The handbook's protocol: world {WORLD_START} + {WORLD_DAYS} days (5,000 cards, 10,000 terminals); "
        f"train {TRAIN_START} + {TRAIN_DAYS} days, {DELAY_DAYS}-day delay, test to {TEST_END}",
        flush=True,
    )
    seeds = []
    for seed in args.seeds:
        measured = run_seed(seed)
        print(
            f"seed {seed}: "
            + ", ".join(f"{m} {measured['model'][m]:.4f}" for m in METRICS)
            + f" ({measured['estimator'].rpartition('.')[2]}, promoted: {measured['promoted']}; "
            f"run {measured['run_seconds']:.0f} s)",
            flush=True,
        )
        seeds.append(measured)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "protocol": {
            "world_start": WORLD_START.isoformat(),
            "world_days": WORLD_DAYS,
            "customers": 5000,
            "terminals": 10000,
            "train": [TRAIN_START.isoformat(), (TRAIN_START + timedelta(days=TRAIN_DAYS - 1)).isoformat()],
            "test": [(TEST_END - timedelta(days=TEST_DAYS - 1)).isoformat(), TEST_END.isoformat()],
            "test_rule": "cards with a fraud reported before the day are left out (fraud's judging)",
        },
        "published": PUBLISHED,
        "seeds": seeds,
        "summary": summary(seeds),
        "bench_seconds": round(time.perf_counter() - began, 1),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(results))
    print(f"\n{results['bench_seconds']:.0f} s in all; results in {args.output}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        sys.exit(child(*sys.argv[2:]))
    sys.exit(main())
