"""The lame duck after SIGTERM (serving/drain.py): what each answer carries while draining, and the
kernel refusing new connections once the worker stops accepting, although another process still
holds the listening socket (as ``bentoml serve``'s main process does). The whole stop under load is
tests/integration/test_serving_resilience.py."""

import asyncio
import os
import socket
from types import SimpleNamespace

import pytest

from serving.drain import Drain, _stop_accepting


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"{}"})


def call(middleware: Drain, path: str) -> list[dict]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(middleware({"type": "http", "path": path, "method": "GET"}, receive, send))
    return sent


def test_until_sigterm_answers_pass_through_untouched():
    start, _ = call(Drain(app), "/score")
    assert start["headers"] == [(b"connection", b"keep-alive")]


def test_while_draining_every_answer_closes_its_connection_and_readiness_fails():
    draining = Drain(app)
    draining.draining = True
    start, body = call(draining, "/score")
    assert start["status"] == 200 and start["headers"] == [(b"connection", b"close")]
    assert body["body"] == b"{}"
    ready, _ = call(draining, "/readyz")
    assert ready["status"] == 503 and (b"connection", b"close") in ready["headers"]


def test_a_lifespan_outside_uvicorn_is_served_without_a_drain(caplog):
    async def lifespan(scope, receive, send):
        await send({"type": "lifespan.startup.complete"})

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(Drain(lifespan)({"type": "lifespan"}, None, send))
    assert sent == [{"type": "lifespan.startup.complete"}]
    assert "no lame-duck drain" in caplog.text


def connect(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize("shut_down", [False, True])
def test_stopping_refuses_new_connections_although_another_process_holds_the_socket(shut_down):
    async def scenario():
        listening = socket.create_server(("127.0.0.1", 0))
        port = listening.getsockname()[1]
        held_elsewhere = os.dup(listening.fileno())  # the arbiter's copy
        server = await asyncio.get_running_loop().create_server(asyncio.Protocol, sock=listening)
        try:
            if shut_down:
                _stop_accepting(SimpleNamespace(servers=[server]))
                with pytest.raises(ConnectionRefusedError):
                    connect(port)
            else:  # what uvicorn's own shutdown does: the kernel still queues connections, unserved
                server.close()
                connect(port)
        finally:
            server.close()
            os.close(held_elsewhere)

    asyncio.run(scenario())
