"""The Dagster UI in a real browser: Debian's Chromium, headless, driven by Playwright, against
`dagster-webserver` on a copy of the world `keel demo` left (the demo's own folder stays as it was:
other modules read it, and the daemon test counts its runs).

What a newcomer does after `make demo` and `make dev`: open the lineage and find every layer, see
every day of the demo materialized, open the drift asset and follow its report link, materialize one
day from the launch dialog.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
from ui_dagster import (
    DagsterUI,
    copy_world,
    dagster_webserver,
    instance_of,
    lake_reports,
    screenshot_on_failure,
)

from resources.dbt import REPO_ROOT
from tests.fraud import DRIFT as FEATURE_DRIFT
from tests.fraud import FEATURES

DRIFT_REPORTS = "monitoring/fraud_drift_reports"  # where the fraud use case's drift writes its reports

pytestmark = pytest.mark.slow

DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
# Bounds on waits for events, far above what a busy two-core machine needs: a page that renders in a
# second on a quiet machine, a run that takes twenty seconds. Playwright's own default is 30 s for
# actions, navigations and browser launch and 5 s for `expect`: every wait here uses UI_TIMEOUT_MS.
UI_TIMEOUT_MS = 180_000
WEBSERVER_START_SECONDS = 600  # dagster-webserver loading the code location
RUN_WAIT_SECONDS = 900  # the run launched from the UI, until it has finished
RECENT_PARTITIONS = 90  # what the launch dialog offers until told "Show all partitions" (Dagster 1.13)

RAW_TRANSACTIONS = dg.AssetKey(["lake", "raw_transactions"])


@dataclass
class BrowserOnUI:
    server: DagsterUI
    browser: object  # playwright.sync_api.Browser
    instance: dg.DagsterInstance
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def asset_url(self, key: dg.AssetKey, query: str = "") -> str:
        return f"{self.url}/assets/{'/'.join(key.path)}{query}"


@pytest.fixture(scope="module")
def ui(chromium_program, demo_world, tmp_path_factory):
    """The webserver and a headless Chromium on a copy of the demo's world, with a drift report."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)  # every `expect` of this module
    assert demo_world.demo.returncode == 0, demo_world.demo.stdout[-2000:] + demo_world.demo.stderr[-2000:]
    folder = tmp_path_factory.mktemp("ui")
    env = copy_world(demo_world.root, demo_world.env, folder / "world")
    with (
        instance_of(env) as instance,
        lake_reports(env["KEEL_LAKE_ROOT"], folder / "reports.log") as reports_url,
    ):
        env["KEEL_LAKE_PUBLIC_URL"] = reports_url  # as `make dev` sets it, so that report links open
        with dagster_webserver(env, REPO_ROOT, folder / "webserver.log") as server:
            # One day's drift report made on the copy, while the webserver starts (the UI reads the
            # instance as it changes): the reports made before (by the demo, or test_monitoring_loop's
            # daemon if it ran first) link to files in the demo's folder, which no browser opens from
            # the UI; `make dev` sets a public URL.
            day = max(instance.get_materialized_partitions(FEATURES))
            with keel_definitions(env) as definitions:
                drift = dg.materialize(
                    [definitions.get_assets_def(FEATURE_DRIFT)],
                    instance=instance,
                    partition_key=day,
                    resources=definitions.resources,
                )
            assert drift.success
            server.wait_until_loaded(timeout=WEBSERVER_START_SECONDS)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=chromium_program, headless=True, timeout=UI_TIMEOUT_MS
                )
                try:
                    yield BrowserOnUI(server, browser, instance, env)
                finally:
                    browser.close()


@pytest.fixture
def page(ui):
    context = ui.browser.new_context(viewport={"width": 1600, "height": 1000})
    # A first visit on localhost gets a newsletter dialog over the page: this browser has seen it.
    context.add_init_script("window.localStorage.setItem('communityNux', '\"1\"')")
    context.set_default_timeout(UI_TIMEOUT_MS)  # actions, navigations and new pages of the context
    yield context.new_page()
    context.close()


@contextmanager
def keel_definitions(env: dict[str, str]):
    """Keel's Definitions, loaded in this process with the world's settings (while the block runs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("KEEL_NAMESPACE", raising=False)  # the definitions pin it in os.environ: undo that
        for name, value in env.items():
            if name.startswith("KEEL_"):
                patch.setenv(name, value)
        from platform_assets.definitions import defs

        yield defs()


def test_the_lineage_shows_every_asset_group_of_the_code_location(ui, page, tmp_path):
    from playwright.sync_api import expect

    with keel_definitions(ui.env) as definitions:
        groups = {spec.group_name for spec in definitions.resolve_all_asset_specs()}
    assert groups, "the code location has no asset group"
    with screenshot_on_failure(page, tmp_path / "lineage.png"):
        page.goto(f"{ui.url}/asset-groups")
        graph = page.locator("[data-svg-viewport]")  # the graph itself, not the list of groups beside it
        for group in sorted(groups):
            expect(graph.get_by_text(group, exact=True).first, f"group {group} in the graph").to_be_visible()


PIPELINE_ASSETS = """
{ assetNodes { assetKey { path } isPartitioned jobNames
    partitionStats { numMaterialized numPartitions numFailed numMaterializing } } }
"""


def test_every_day_of_the_demo_is_materialized_in_the_ui(ui, demo_world, page, tmp_path):
    """The demo simulated every day of the calendar up to yesterday: no daily asset of the main job
    shows a missing day (what the UI reads, for every asset; and its Partitions tab, for a few)."""
    from playwright.sync_api import expect

    days = (demo_world.last_day - demo_world.first_day).days + 1
    nodes = ui.server.graphql(PIPELINE_ASSETS)["assetNodes"]
    daily = {
        "/".join(node["assetKey"]["path"]): node["partitionStats"]
        for node in nodes
        if node["isPartitioned"] and "keel_pipeline" in node["jobNames"]
    }
    assert {"lake/raw_transactions", "fraud/features", "terminal_volume/scores"} <= set(daily)
    expected = {"numMaterialized": days, "numPartitions": days, "numFailed": 0, "numMaterializing": 0}
    assert {key: stats for key, stats in daily.items() if stats != expected} == {}
    for key in ("lake/raw_transactions", "fraud/features", "terminal_volume/scores"):
        with screenshot_on_failure(page, tmp_path / f"{key.replace('/', '_')}_partitions.png"):
            page.goto(ui.asset_url(dg.AssetKey.from_user_string(key), "?view=partitions"))
            expect(page.get_by_text(f"{days} Partitions Selected", exact=True)).to_be_visible()
            expect(page.get_by_text(f"Materialized ({days})", exact=True)).to_be_visible()
            expect(page.get_by_text("Missing (0)", exact=True)).to_be_visible()


def test_the_drift_asset_shows_its_metadata_and_a_link_that_opens_its_report(ui, page, tmp_path):
    from playwright.sync_api import expect

    (record,) = ui.instance.fetch_materializations(FEATURE_DRIFT, limit=1).records
    materialization = record.asset_materialization
    metadata, day = materialization.metadata, materialization.partition
    report_url = metadata["report"].value
    assert report_url.startswith(ui.env["KEEL_LAKE_PUBLIC_URL"] + "/"), report_url
    assert report_url.endswith(f"/{DRIFT_REPORTS}/date={day}/drift.html"), report_url
    with screenshot_on_failure(page, tmp_path / "feature_drift.png"):
        # The Events view opens on the latest materialization.
        page.goto(ui.asset_url(FEATURE_DRIFT, "?view=events"))
        expect(page.get_by_text(f"Partition {day} materialized in run {record.run_id[:8]}")).to_be_visible()
        entry = {
            key: page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
            for key in metadata
        }
        for key, row in entry.items():
            expect(row, f"metadata entry {key}").to_have_count(1)
        expect(entry["model_version"]).to_contain_text(metadata["model_version"].value)
        expect(entry["current_rows"]).to_contain_text(str(metadata["current_rows"].value))

        link = entry["report"].get_by_role("link", name=report_url, exact=True)
        expect(link).to_have_attribute("href", report_url)
        with page.context.expect_page() as opened:
            link.click()  # a new tab, as a person would open it
        report = opened.value
        report.wait_for_load_state("domcontentloaded")
        assert report.url == report_url
        served = page.context.request.get(report_url, timeout=UI_TIMEOUT_MS)
        assert served.ok, f"{report_url}: {served.status}"
    # What the link opens is the day's report itself, as the asset wrote it into the lake.
    assert served.body() == Path(metadata["report_path"].value).read_bytes()


def test_a_day_materialized_from_the_launch_dialog_gets_a_new_materialization(ui, demo_world, page, tmp_path):
    from playwright.sync_api import expect

    instance = ui.instance
    day = min(instance.get_materialized_partitions(RAW_TRANSACTIONS))  # materialized: it has landed

    def materializations() -> dict[int, str]:
        """Storage id -> run id of the day's materializations of raw_transactions."""
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=RAW_TRANSACTIONS, asset_partitions=[day]), limit=100
        ).records
        return {r.storage_id: r.run_id for r in records}

    before = materializations()
    runs_before = {run.run_id for run in instance.get_runs()}
    with screenshot_on_failure(page, tmp_path / "launch.png"):
        page.goto(ui.asset_url(RAW_TRANSACTIONS))
        page.get_by_role("button", name="Materialize").click()
        # The day's payments and its quarantine are written by one step: the UI says so first.
        confirm = page.get_by_role("dialog").filter(has_text="Additional assets will be materialized")
        confirm.get_by_role("button", name="Confirm").click()
        launch = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
        partitions = launch.get_by_role("textbox")
        expect(partitions).to_be_visible()
        # The dialog offers the newest partitions of the world's calendar (it ends with the demo).
        if (demo_world.last_day - date.fromisoformat(day)).days >= RECENT_PARTITIONS:
            launch.get_by_text("Show all partitions").click()
        partitions.fill(day)
        partitions.press("Enter")
        expect(launch.get_by_text("1 partition", exact=True)).to_be_visible()
        launch.get_by_role("button", name="Launch 1 run").click()
        expect(launch).to_be_hidden()

        run = finished_run(instance, runs_before, ui.server)
        assert run.status == dg.DagsterRunStatus.SUCCESS, failures(instance, run)
        page.goto(f"{ui.url}/runs/{run.run_id}")  # and the UI says so
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        expect(page.get_by_text(f"partition: {day}", exact=True)).to_be_visible()

    assert run.tags["dagster/partition"] == day and run.tags.get("dagster/from_ui") == "true", run.tags
    assert RAW_TRANSACTIONS in run.asset_selection, run.asset_selection
    new = {
        storage_id: run_id for storage_id, run_id in materializations().items() if storage_id not in before
    }
    assert list(new.values()) == [run.run_id], f"new materializations of {day}: {new}"


def finished_run(instance: dg.DagsterInstance, runs_before: set[str], server: DagsterUI) -> dg.DagsterRun:
    """The one run launched since ``runs_before``, once it has finished."""
    deadline = time.monotonic() + RUN_WAIT_SECONDS
    while True:
        new = [run for run in instance.get_runs() if run.run_id not in runs_before]
        assert len(new) <= 1, f"one launch, several runs: {[(run.run_id, run.tags) for run in new]}"
        if new and new[0].status in DONE:
            return new[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"no finished run after {RUN_WAIT_SECONDS} s: {new}\n{server.tail()}")
        time.sleep(0.5)


def failures(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    """The run's failure events, to read in the test's output."""
    return "\n".join(
        str(entry.dagster_event.event_specific_data)
        for entry in instance.all_logs(run.run_id)
        if entry.is_dagster_event and entry.dagster_event.is_failure
    )
