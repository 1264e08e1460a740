"""The Dagster UI for browser tests: a private copy of a Keel world, the webserver on it (and the
lake's reports behind a file server, as `make dev` has them), and Playwright helpers."""

import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import yaml
from bento_server import default_signals, free_port, kill_group, wait_for_port
from dagster._core.instance.ref import InstanceRef

# Runs launched from the UI start at once, from the webserver, instead of waiting in the queue for
# the daemon (deploy/local/dagster.yaml queues them). What the UI does is the same either way (the
# launch dialog's GraphQL mutation); only who starts the run's process differs, and that part,
# the daemon's queue, is what test_monitoring_loop runs for real. A daemon here would cost seconds
# to start and would tick Keel's sensors and automation on the copy: runs the test did not ask for.
DIRECT_LAUNCH = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}

_LOCATIONS = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def copy_world(root: Path, env: dict[str, str], destination: Path) -> dict[str, str]:
    """Copy a world's folder (lake, warehouse, Dagster and BentoML homes) to ``destination``; returns
    ``env`` with every path into ``root`` pointing into the copy. The copy's instance launches runs
    directly (``DIRECT_LAUNCH``), with the rest of its configuration (concurrency pools) kept."""
    shutil.copytree(root, destination, symlinks=True)
    inside = re.compile(re.escape(str(root)) + r"(?=/|$)")
    copied = {name: inside.sub(lambda _: str(destination), value) for name, value in env.items()}
    config_file = Path(copied["DAGSTER_HOME"]) / "dagster.yaml"
    config = yaml.safe_load(config_file.read_text()) or {}
    config.pop("run_queue", None)
    config["run_coordinator"] = DIRECT_LAUNCH
    config_file.write_text(yaml.safe_dump(config))
    # A run the daemon test stopped mid-way can leave the warehouse pool's slot claimed in the
    # copied instance: nothing of the world runs now, so free every run's slots, or the first step
    # of the pool waits for ever.
    instance = dg.DagsterInstance.from_config(copied["DAGSTER_HOME"])
    try:
        for record in instance.get_run_records():
            instance.event_log_storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
    finally:
        instance.dispose()
    return copied


def instance_of(env: dict[str, str]) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))


def start(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    """A server in its own process group with default signal handlers, logging to ``log``."""
    with open(log, "w") as output:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )


def stop(process: subprocess.Popen, timeout: float = 20) -> None:
    """SIGTERM to the server, then nothing of its group may outlive it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    kill_group(process.pid)
    process.wait()


@dataclass
class DagsterUI:
    url: str
    port: int
    process: subprocess.Popen
    log: Path

    def graphql(self, query: str) -> dict:
        response = httpx.post(f"{self.url}/graphql", json={"query": query}, timeout=30)
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_until_loaded(self, timeout: float = 120) -> None:
        """Until the webserver answers, with Keel's code location loaded (else its error)."""
        wait_for_port(self.port, self.process, timeout=timeout, what="dagster-webserver", log=self.log)
        workspace = self.graphql(_LOCATIONS)["workspaceOrError"]
        entries = workspace.get("locationEntries")
        assert entries, f"the webserver has no code location: {workspace}\n{self.tail()}"
        errors = [e for e in entries if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
        assert not errors, f"the code location did not load: {errors}\n{self.tail()}"

    def tail(self, characters: int = 3000) -> str:
        return self.log.read_text()[-characters:]


@contextmanager
def lake_reports(lake_root: str, log: Path):
    """The lake's files read-only over HTTP on loopback (what `make dev` runs beside the UI, so that
    report links in metadata open); yields the base URL for ``KEEL_LAKE_PUBLIC_URL``."""
    port = free_port()
    process = start(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", lake_root, str(port)],
        env=dict(os.environ),
        cwd=Path(lake_root),
        log=log,
    )
    try:
        wait_for_port(port, process, timeout=15, what="the lake's file server", log=log)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


@contextmanager
def dagster_webserver(env: dict[str, str], cwd: Path, log: Path):
    """`dagster-webserver` on Keel's workspace, on loopback, while the block runs; it takes seconds to
    load the code location: ``wait_until_loaded`` before using it."""
    port = free_port()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    process = start([webserver, "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"], env, cwd, log)
    try:
        yield DagsterUI(f"http://127.0.0.1:{port}", port, process, log)
    finally:
        stop(process)


@contextmanager
def screenshot_on_failure(page, path: Path):
    """A failed check (an assertion, or a Playwright timeout) leaves a screenshot of the page and
    names it in the failure."""
    from playwright.sync_api import Error as PlaywrightError

    try:
        yield
    except (AssertionError, PlaywrightError) as error:
        try:
            page.screenshot(path=path, full_page=True)
            saved = f"screenshot: {path}"
        except PlaywrightError as screenshot_error:
            saved = f"no screenshot ({screenshot_error})"
        raise AssertionError(f"{error}\n{saved} (page {page.url})") from error
