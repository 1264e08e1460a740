# Keel: `make demo` and `make test` are all a newcomer needs (Python 3.11, make and git).
# Every target bootstraps what it needs: uv, the locked virtualenv, the dbt manifest, the
# Dagster home. Generated state lives under .keel/ (git-ignored); `make clean` removes it.

SHELL := /bin/bash
.DEFAULT_GOAL := help

STATE := .keel
# Whose data: your login name unless KEEL_NAMESPACE says otherwise (resources/environments.py has the
# same rule); each namespace has its own Dagster instance. `make demo KEEL_NAMESPACE=exp1` runs apart.
export KEEL_NAMESPACE ?= $(or $(USER),$(shell id -un))
export DAGSTER_HOME ?= $(CURDIR)/$(STATE)/dagster/$(KEEL_NAMESPACE)
# The local BentoML store: training saves models there, `bentoml build` and `bentoml serve` read them.
export BENTOML_HOME := $(CURDIR)/$(STATE)/bentoml
export BENTOML_DO_NOT_TRACK := true
PORT ?= 3000

# uv from PATH, or bootstrapped with pip and run as a module.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen --no-sync

DBT_SOURCES := $(shell find dbt_project/models dbt_project/macros -type f) dbt_project/dbt_project.yml dbt_project/profiles.yml
MANIFEST := $(STATE)/dbt/target/manifest.json

.PHONY: help demo demo-drift land test dev serve mlflow bench bench-model bench-landed bench-serving serving-requirements lint clean install

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-20s %s\n", $$1, $$2}'

demo: install $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml  ## simulate six weeks, run the whole lifecycle, build the Bento
	$(RUN) keel demo

demo-drift: install $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml  ## after the demo: land drifted days, watch drift -> retraining -> gate
	@test -d $(STATE)/lake/namespaces/$(KEEL_NAMESPACE)/registry || $(MAKE) demo
	$(RUN) keel demo-drift

land: install  ## land the next simulated day in the landing zone (DRIFT=1 for drifted spending and card testing)
	$(RUN) keel land $(if $(DRIFT),--amount-scale 3 --card-testing)

test: install $(MANIFEST)  ## run the test suite
	$(RUN) pytest

# The lake's reports (drift) are linked from the UI: a read-only file server on PORT+1 serves them.
# keel/dev.py runs both and stops both, with everything they started, on Ctrl-C or SIGTERM (to make
# or its group) within 10 s; `exec` leaves no shell between make and it to swallow make's SIGTERM.
REPORTS_PORT := $(shell echo $$(($(PORT) + 1)))
dev: install $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml  ## Dagster UI and daemon on http://127.0.0.1:$(PORT), reports on PORT+1
	@mkdir -p $(STATE)/lake
	@exec $(RUN) python -m keel.dev --port $(PORT) --reports-port $(REPORTS_PORT) --reports-dir $(STATE)/lake

serve: install  ## serve a service's newest Bento on http://127.0.0.1:$(PORT) (SERVICE=<name>, or BENTO=<tag>)
	$(RUN) keel serve --port $(PORT) $(SERVICE) $(if $(BENTO),--bento $(BENTO))

# Every training and each of its model-selection trials, per namespace and use case (keel_core/tracking.py).
MLFLOW_PORT ?= 5000
mlflow: install  ## MLflow's UI on http://127.0.0.1:$(MLFLOW_PORT): the experiments of the local trainings
	@mkdir -p $(STATE)/mlflow
	$(RUN) mlflow ui --backend-store-uri sqlite:///$(CURDIR)/$(STATE)/mlflow/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT)

bench: install $(MANIFEST)  ## the data path against hand-written DuckDB, side by side (about 7 min; results in benchmarks/results/)
	$(RUN) python benchmarks/data_path.py $(if $(DAYS),--days $(DAYS))

# The fraud-detection handbook's protocol (train 7 days, 7-day delay, test 7 days; its test rule) run
# through Keel for 5 simulator seeds, beside the handbook's published figures and a logistic baseline.
bench-model: install $(MANIFEST)  ## the fraud model judged as the field judges it, 5 seeds (about 15 min; results in benchmarks/results/)
	$(RUN) python benchmarks/model_quality.py $(if $(SEEDS),--seeds $(SEEDS))

# A landed day through make dev's processes, in a demo world of its own (.keel/bench-landed/).
bench-landed: install $(MANIFEST)  ## from a landed file to the last materialization it sets off under the daemon (about 7 min)
	$(RUN) python benchmarks/landed_day.py

bench-serving: install $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml  ## load-test the Bento against a naive baseline (runs the demo first if there is no Bento)
	@test -d $(BENTOML_HOME)/bentos/fraud_scorer_$(KEEL_NAMESPACE) || $(MAKE) demo
	$(RUN) python benchmarks/serving_load.py

serving-requirements:  ## re-pin serving/requirements.txt (what the Bento installs) from uv.lock
	$(UV) export --frozen --only-group serving --no-hashes --no-emit-project --no-annotate \
		--output-file serving/requirements.txt

lint: install $(MANIFEST)  ## ruff (Python), the layers' import contracts and sqlfluff (dbt SQL)
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) lint-imports
	cd dbt_project && $(RUN) sqlfluff lint models

clean:  ## remove all generated state (.keel/)
	rm -rf $(STATE)

install: .venv/.synced

.venv/.synced: uv.lock pyproject.toml
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

# dbt's manifest is what the code location reads to know the dbt models: rebuilt when they change.
$(MANIFEST): .venv/.synced $(DBT_SOURCES) resources/dbt.py
	$(RUN) dagster-dbt project prepare-and-package --file resources/dbt.py
	@touch $@

$(DAGSTER_HOME)/dagster.yaml: deploy/local/dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp $< $@
