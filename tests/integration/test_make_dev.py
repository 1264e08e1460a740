"""`make dev` stops cleanly (issue 19): after Ctrl-C, or SIGTERM to make alone or to its whole process
group, nothing it started keeps running (`dg dev`, the webserver, the daemon, code servers, runs, the
report server), and make does not report `wait: No child processes`.

`make dev` runs as a developer types it, in a session of its own (every process it starts is in that
session, whatever process group keel/dev.py gives them), on a private namespace, Dagster home and lake.
The issue's target is 10 s from the signal to the last process gone on a quiet machine; each test
prints its measured time and asserts a generous bound, so that it holds on a busy machine.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

import httpx
import pytest
from bento_server import default_signals, free_port

from resources.dbt import REPO_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("make") is None, reason="needs make"),
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="lists processes from /proc (Linux)"),
]

UI_WAIT_SECONDS = 300  # `make dev` loads the code location before the UI answers: ~20 s here when idle
STOP_WAIT_SECONDS = 60


def background_job() -> None:
    """Dispositions of a job started with `&` by a non-interactive shell (or by a CI step that did):
    SIGINT and SIGQUIT ignored, which exec passes on. Dagster then ignored SIGTERM too."""
    default_signals()
    for number in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(number, signal.SIG_IGN)


# (how the signal is sent, signal, the process's starting dispositions). Two stops of the four
# tried by hand (SIGTERM to make or to its group from a terminal behave as these): each costs
# ~25 s of `make dev` starting up.
STOPS = {
    "ctrl_c": (os.killpg, signal.SIGINT, default_signals),
    "sigterm_to_make_started_in_background": (os.kill, signal.SIGTERM, background_job),
}


@pytest.mark.parametrize("stop", STOPS)
def test_make_dev_leaves_no_process_running_after_it_is_stopped(tmp_path, record_property, stop):
    send, number, dispositions = STOPS[stop]
    port = port_pair()
    log = tmp_path / "make_dev.log"
    with open(log, "w") as output:
        make = subprocess.Popen(
            ["make", "dev", f"PORT={port}"],
            cwd=REPO_ROOT,
            env=private_env(tmp_path),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=dispositions,
        )
    try:
        wait_until_ui_answers(port, make, log)
        running = session_processes(make.pid)
        assert any("dg dev" in command for command in running.values()), running

        send(make.pid, number)
        signalled = time.monotonic()
        while session_processes(make.pid) and time.monotonic() - signalled < STOP_WAIT_SECONDS:
            time.sleep(0.1)
        seconds = time.monotonic() - signalled
        print(f"make dev stopped by {stop} ({signal.Signals(number).name}) in {seconds:.1f} s")
        record_property("stop_seconds", round(seconds, 1))

        left = session_processes(make.pid)
        assert not left, f"still running {seconds:.0f} s after {stop}: {left}\n{tail(log)}"
        assert make.wait(timeout=5) != 0  # stopped, not finished
        assert "No child processes" not in log.read_text(), tail(log)
    finally:
        kill_session(make.pid)
        make.wait()


def private_env(root: Path) -> dict[str, str]:
    """The caller's environment with a namespace, Dagster home and lake of the test's own; without
    the variables of a make that runs pytest (its jobserver is not passed down)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"}
    }
    return {
        **env,
        "KEEL_NAMESPACE": "make_dev",
        "DAGSTER_HOME": str(root / "dagster_home"),  # make copies deploy/local/dagster.yaml there
        "KEEL_LAKE_ROOT": str(root / "lake"),
        "KEEL_WAREHOUSE_DIR": str(root / "warehouse"),
        "KEEL_ONLINE_STORE_URL": f"sqlite:///{root / 'online_features.sqlite'}",
    }


def port_pair() -> int:
    """A free port whose next one is free too: `make dev` serves the lake's reports on PORT+1."""
    while True:
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def wait_until_ui_answers(port: int, make: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + UI_WAIT_SECONDS
    while True:
        with suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=5).status_code == 200:
                return
        if make.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"the Dagster UI did not answer on port {port}:\n{tail(log)}")
        time.sleep(0.5)


def session_processes(session: int) -> dict[int, str]:
    """Processes of ``session`` that still run, with their command lines. Zombies are not counted:
    they run nothing, and this machine's init reaps orphans a second or two late."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
            fields = stat.read_text().rpartition(")")[2].split()
            command = stat.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found[int(stat.parent.name)] = command.strip()
    return found


def kill_session(session: int) -> None:
    for pid in session_processes(session):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def tail(log: Path, characters: int = 3000) -> str:
    return log.read_text(errors="replace")[-characters:]
