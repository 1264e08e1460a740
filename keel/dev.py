"""`make dev`: the Dagster UI and daemon (`dg dev`) and the lake's report server, started and stopped
together. Ctrl-C, or SIGTERM to make alone or to its whole process group, leaves nothing running.

Why a supervisor rather than a shell recipe (issue 19):
- A process started with SIGINT ignored keeps ignoring it across exec: bash ignores SIGINT in its
  `&` jobs, and a shell or CI job that started make in the background passes the ignore down. Dagster
  then gives SIGTERM the disposition of SIGINT (``setup_interrupt_handlers``), so `dg dev` and its
  code servers ignored both, and only SIGKILL stopped them. A shell cannot undo an ignore it
  inherited; Python can, and exec gives the children default dispositions for the signals this
  process handles.
- make sends SIGTERM to its recipe's process only; the shell there waited for `uv run dg dev` and
  nothing told the report server or Dagster's own processes to stop.
- A recipe that dies at once with make's signal races make's signal handler, which then reports
  ``wait: No child processes``; this process exits only after its children, so make's handler has
  a child to wait for.

Each child leads a process group of its own: one ``killpg`` reaches everything it started (webserver,
daemon, code servers, runs) and nothing outside it, and a terminal's Ctrl-C reaches this process
(and make), not them, so that the stop happens in order (``_stop``). Run as ``python -m keel.dev``.
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# A graceful stop gets this long, then SIGKILL: issue 19 asks for everything gone within 10 s of the
# signal. Dagster stops in 3-5 s on an idle machine; a run still importing the code location does not.
GRACE_SECONDS = 8.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keel.dev", description="the Dagster UI and daemon, and the lake's reports"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the Dagster UI")
    parser.add_argument("--reports-port", type=int, required=True, help="the lake's reports, read-only")
    parser.add_argument("--reports-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    received: list[int] = []  # uv run forwards the signal it got too: the first one counts
    for number in STOP_SIGNALS:
        signal.signal(number, lambda signum, _frame: received.append(signum))
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)  # bash ignores it in `&` jobs; exec keeps an ignore

    ui = f"http://{args.host}:{args.port}"
    reports = f"http://{args.host}:{args.reports_port}"
    server = [sys.executable, "-m", "http.server", "--bind", args.host, "--directory", str(args.reports_dir)]
    dg = Path(sys.executable).with_name("dg")
    children: list[subprocess.Popen] = []
    exited: list[subprocess.Popen] = []
    try:
        children.append(_start([*server, str(args.reports_port)], env=dict(os.environ), quiet=True))
        children.append(
            _start(
                [dg, "dev", "--host", args.host, "--port", str(args.port)],
                # Report links in run metadata point at the report server; alerts link to the UI.
                env={**os.environ, "KEEL_LAKE_PUBLIC_URL": reports, "DAGSTER_WEBSERVER_URL": ui},
            )
        )
        while not received and not exited:
            time.sleep(0.2)
            exited = [child for child in children if child.poll() is not None]
    finally:
        _stop(children)
    if received:
        return 128 + received[0]
    # Say which one stopped by itself (the report server is quiet: it would log every request).
    command = " ".join(map(str, exited[0].args))
    print(f"keel.dev: `{command}` exited ({exited[0].returncode}): stopped the rest", file=sys.stderr)
    return exited[0].returncode if exited[0].returncode >= 0 else 128 - exited[0].returncode


def _start(command: list, env: dict[str, str], quiet: bool = False) -> subprocess.Popen:
    output = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(command, env=env, stdout=output, stderr=output, process_group=0)


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM to each child (Dagster takes it as Ctrl-C), then to what is left of their process
    groups (runs, code servers finishing), SIGKILL to what still runs ``GRACE_SECONDS`` after.

    The children first, alone: `dg dev` stops its webserver and daemon, then its code servers. Signalled
    all at once, as a terminal's Ctrl-C does, a code server can stop first and `dg dev` starts a new one."""
    deadline = time.monotonic() + GRACE_SECONDS
    groups = [child.pid for child in children]
    for child in children:
        child.send_signal(signal.SIGTERM)  # a no-op for a child already reaped
    _wait_until(lambda: all(child.poll() is not None for child in children), deadline)
    _signal_groups(groups, signal.SIGTERM)
    _wait_until(lambda: not any(_alive(group) for group in groups), deadline)
    if left := [group for group in groups if _alive(group)]:
        print(f"keel.dev: killed what still ran {GRACE_SECONDS:.0f} s after SIGTERM", file=sys.stderr)
        _signal_groups(left, signal.SIGKILL)
    for child in children:
        child.wait()


def _wait_until(done, deadline: float) -> None:
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)


def _signal_groups(groups: list[int], number: int) -> None:
    for group in groups:
        with suppress(ProcessLookupError):
            os.killpg(group, number)


def _alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
