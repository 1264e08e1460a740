"""What a worker does between SIGTERM and its exit, so that every request it accepted gets an answer.

uvicorn's own shutdown (what a BentoML worker runs on SIGTERM) closes its listening socket and, at
once, every keep-alive connection that is idle at that instant. Two ways a sent request then goes
unanswered: a client that has just written its next request on such a connection (uvicorn has not
read it yet) sees the connection closed (reset, the unread bytes make the kernel send RST), and a
client that connects after the worker closed its copy of the listening socket is still accepted by
the kernel (``bentoml serve``'s main process holds the socket too) into a queue nobody serves, and is
reset when that process exits. Under 64 clients about 64 requests a stop went that way.

``Drain`` (an ASGI middleware: a BentoML service's ``add_asgi_middleware(Drain)``) replaces
uvicorn's SIGTERM handler in the worker with a lame duck:

1. stop accepting: the shared listening socket is shut down, so the kernel refuses new connections
   (a refused connection carries no request; the client tries elsewhere) instead of queueing them;
2. answer everything that arrives on an open connection, each response with ``Connection: close``
   so the client does not send another on it; ``/readyz`` answers 503;
3. once no connection is open (or after ``DRAIN_SECONDS``: a client that keeps an idle connection
   without sending is closed as uvicorn's keep-alive timeout would close it), hand over to uvicorn's
   shutdown, which waits for the requests still running and then runs the service's shutdown hook
   (the rest of the prediction log is written).

Kubernetes removes the pod from the service's endpoints during the container's preStop sleep
(``deploy/k8s/base/deployment.yaml``), before SIGTERM, so by then new connections are rare anyway.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

import uvicorn

logger = logging.getLogger("keel.serving.drain")

DRAIN_SECONDS = 10.0  # at most this long from SIGTERM to uvicorn's own shutdown
READINESS_PATHS = frozenset({"/readyz"})
CLOSE = (b"connection", b"close")


class Drain:
    """ASGI middleware: a lame duck from SIGTERM until the worker's connections are answered."""

    def __init__(self, app, drain_seconds: float = DRAIN_SECONDS):
        self.app = app
        self.drain_seconds = drain_seconds
        self.draining = False

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            # The lifespan starts inside uvicorn's signal capture: its handler is in place to wrap.
            self._take_over_sigterm()
            return await self.app(scope, receive, send)
        if scope["type"] != "http" or not self.draining:
            return await self.app(scope, receive, send)
        if scope["path"] in READINESS_PATHS:
            return await _answer(send, 503, b'{"error":"stopping"}')
        return await self.app(scope, receive, _closing(send))

    def _take_over_sigterm(self) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        server = getattr(handler, "__self__", None)
        if not isinstance(server, uvicorn.Server):  # e.g. the app called in process by a test
            logger.warning("SIGTERM is not handled by uvicorn here (%r): no lame-duck drain", handler)
            return
        loop = asyncio.get_running_loop()

        def on_sigterm(number, frame) -> None:
            if not self.draining:
                self.draining = True
                # From a signal handler: the thread-safe call also wakes the loop.
                loop.call_soon_threadsafe(loop.create_task, self._lame_duck(server, number, frame))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _lame_duck(self, server: uvicorn.Server, number: int, frame) -> None:
        try:
            await self._answer_open_connections(server)
        except Exception:  # the drain must never keep a worker from stopping
            logger.exception("SIGTERM: the drain failed; shutting down at once")
        server.handle_exit(number, frame)

    async def _answer_open_connections(self, server: uvicorn.Server) -> None:
        loop = asyncio.get_running_loop()
        # A worker still starting listens once it has started (which would open the shared socket
        # again for everyone): stop it accepting from there.
        while not (server.started or server.should_exit):
            await asyncio.sleep(0.05)
        _stop_accepting(server)
        logger.info(
            "SIGTERM: stopped accepting connections; answering the %d open, each answer closing its own",
            len(server.server_state.connections),
        )
        deadline = loop.time() + self.drain_seconds
        while server.server_state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if server.server_state.connections:
            logger.info(
                "SIGTERM: %d connection(s) still open after %s s; shutting down",
                len(server.server_state.connections),
                self.drain_seconds,
            )


def _stop_accepting(server: uvicorn.Server) -> None:
    """Close this worker's listeners and shut the listening socket down for every process sharing
    it, so that the kernel refuses new connections rather than queueing them for nobody."""
    shared = []
    for listener in getattr(server, "servers", []):  # none if its startup failed
        shared += [socket.socket(fileno=os.dup(sock.fileno())) for sock in listener.sockets]
        listener.close()
    for sock in shared:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # another worker shut it down first
            pass
        finally:
            sock.close()


def _closing(send):
    async def send_closing(message):
        if message["type"] == "http.response.start":
            kept = [header for header in message.get("headers", []) if header[0].lower() != b"connection"]
            message = {**message, "headers": [*kept, CLOSE]}
        await send(message)

    return send_closing


async def _answer(send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), CLOSE]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
