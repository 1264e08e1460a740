"""`bentoml serve` on loopback for tests: started in its own process group with default signal
handlers (this machine's background processes may inherit ignored ones), stopped by pid."""

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> int:
        """SIGTERM, as Kubernetes stops a pod: the service drains and runs its shutdown hooks."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


@contextmanager
def serving(bento: str, env: dict[str, str], log: Path, ready: str = "/readyz", timeout: float = 90):
    """Serve ``bento`` until the block ends; waits until ``ready`` answers 200."""
    port = _free_port()
    bentoml = Path(sys.executable).with_name("bentoml")
    with open(log, "w") as output:
        process = subprocess.Popen(
            [bentoml, "serve", bento, "--host", "127.0.0.1", "--port", str(port)],
            # Each server its own task result store (BentoML's default is one file in BENTOML_HOME).
            env={**os.environ, "BENTOML_RESULT_STORE": str(log.with_suffix(".tasks.db")), **env},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_signals,
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
