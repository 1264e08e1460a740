"""Servers for tests, `bentoml serve`, a private `redis-server` and the Dagster daemon: started in
their own process group with default signal handlers (this machine's background processes may
inherit ignored ones), stopped by pid."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
from world_settings import NAMESPACE


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def wait_for_log(self, written, timeout: float = 120) -> str:
        """The server's log once ``written(text)`` holds: workers write their lines when they get to it."""
        deadline = time.monotonic() + timeout
        while not written(text := self.log.read_text()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the log did not get the expected lines in {timeout} s:\n{text[-3000:]}")
            time.sleep(0.2)
        return text

    def stop(self) -> int:
        """SIGTERM to the server's main process only, as Kubernetes stops a container: BentoML's
        arbiter stops its workers, which drain (serving/drain.py: up to 10 s for open connections,
        then the requests still running) and run their shutdown hooks."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
                raise
            finally:
                kill_group(self.process.pid)  # nothing of the server may outlive the test
        return self.process.returncode


def kill_group(pid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


@contextmanager
def serving(bento: str, env: dict[str, str], log: Path, ready: str = "/readyz", timeout: float = 90):
    """Serve ``bento`` until the block ends; waits until ``ready`` answers 200."""
    port = free_port()
    bentoml = Path(sys.executable).with_name("bentoml")
    with open(log, "w") as output:
        process = subprocess.Popen(
            [bentoml, "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
            # Each server its own task result store (BentoML's default is one file in BENTOML_HOME).
            env={
                **os.environ,
                "BENTOML_RESULT_STORE": str(log.with_suffix(".tasks.db")),
                "KEEL_NAMESPACE": NAMESPACE,  # the worlds' namespace: whose keys in a shared Redis
                **env,
            },
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=default_signals,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(server.url + ready, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{bento} not ready after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield server
    finally:
        server.stop()


def wait_for_port(port: int, process: subprocess.Popen, timeout: float, what: str, log: Path | None = None):
    """Until something accepts connections on loopback ``port``; fails if ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                output = f":\n{log.read_text()[-2000:]}" if log else ""
                raise RuntimeError(f"{what} did not start on port {port}{output}") from None
            time.sleep(0.05)


@contextmanager
def private_redis(program: str):
    """A Redis server of the test's own on a free port (to stop, pause and kill at will); yields
    (url, process)."""
    port = free_port()
    process = subprocess.Popen(
        [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=default_signals,
    )
    try:
        wait_for_port(port, process, timeout=10, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        kill_group(process.pid)
        process.wait()


class Daemon:
    """`dagster-daemon run` on Keel's workspace, in its own process group (its runs too), logging to a
    file. ``stop`` sends SIGTERM to the daemon alone, as a deployment's rolling restart would."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path):
        self.env, self.log, self.cwd = env, log, cwd
        self.process: subprocess.Popen | None = None
        self.groups: list[int] = []  # every group started, killed at the end (runs live in them)

    def start(self) -> None:
        daemon = Path(sys.executable).with_name("dagster-daemon")
        with open(self.log, "a") as output:
            self.process = subprocess.Popen(
                [daemon, "run", "-w", "workspace.yaml"],
                cwd=self.cwd,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=default_signals,
            )
        self.groups.append(self.process.pid)

    def stop(self, timeout: float = 60) -> int:
        os.kill(self.process.pid, signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def tail(self, characters: int = 4000) -> str:
        return self.log.read_text()[-characters:]

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        for group in self.groups:
            kill_group(group)
