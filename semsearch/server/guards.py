"""What keeps one client from starving or abusing the server: deadlines for slow requests, a bound on
concurrent image work, and refusal of cross-site writes.

* `DeadlineProtocol`: uvicorn's h11 protocol (whose header size h11 bounds, 16 KiB) with the deadlines uvicorn
  lacks. A connection must deliver a request's headers within `header_timeout` of opening (or of the previous
  response), and its body within `body_timeout` more; otherwise it is closed. Half-sent requests therefore
  cannot pile up and hold sockets forever.
* `Gate`: at most `workers` uploads are decoded and run through the CNN at once and `waiting` more may queue;
  beyond that the answer is 503 with Retry-After, so memory stays bounded whatever clients send.
* `SameOriginWrites`: a browser page from another site may not POST here (a `text/plain` form needs no CORS
  preflight), so state-changing requests must come from this origin or from a non-browser client.
"""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import h11
import uvicorn
from fastapi import HTTPException
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 60.0
MAX_HEADER_BYTES = 16 * 1024
RETRY_AFTER_S = 2

T = TypeVar("T")


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers or body arrive too slowly."""

    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, body_grace=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_timeout, body_grace=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float, body_grace: bool) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._check, body_grace)

    def _disarm(self) -> None:
        deadline = getattr(self, "_deadline", None)
        if deadline is not None:
            deadline.cancel()

    def _check(self, body_grace: bool) -> None:
        """IDLE: the headers are not all there; SEND_BODY: the body is still coming. DONE and the rest: the
        app has the request (or the connection is ending), nothing to police."""
        state = self.conn.their_state
        if state is h11.SEND_BODY and body_grace:
            self._arm(self.body_timeout, body_grace=False)
        elif state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.transport.close()


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
) -> uvicorn.Config:
    """uvicorn settings for serving `app`: the deadline protocol, bounded headers, short keep-alive."""
    protocol = type(
        "Deadlines", (DeadlineProtocol,), {"header_timeout": header_timeout, "body_timeout": body_timeout}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=5,
        log_level="warning",
    )


def serve(app: Any, host: str, port: int) -> None:
    """Run `app` until interrupted, with as many sockets as the system allows (slow clients are closed by
    their deadlines, so they only hold sockets for a while)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    uvicorn.Server(server_config(app, host, port)).run()


class Gate:
    """Admits at most `workers + waiting` callers; `run` lets `workers` of them work at once."""

    def __init__(self, workers: int, waiting: int) -> None:
        self._admitted = threading.BoundedSemaphore(workers + waiting)
        self._working = threading.Semaphore(workers)

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """A place in the queue, or 503 with Retry-After at once when it is full."""
        if not self._admitted.acquire(blocking=False):
            raise HTTPException(
                503,
                "busy: too many uploads are being processed; retry in a moment",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        try:
            yield
        finally:
            self._admitted.release()

    def run(self, work: Callable[[], T]) -> T:
        """`work()` once a worker place is free (call from a worker thread, inside `admitted`)."""
        with self._working:
            return work()


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class SameOriginWrites:
    """Refuses requests other than GET/HEAD/OPTIONS that a browser sent from another site (or from an opaque
    origin). Browsers say where a request comes from (Sec-Fetch-Site, Origin); other clients send neither
    and cannot be made to act for someone else."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            site = headers.get("sec-fetch-site")
            origin = headers.get("origin")
            host = headers.get("host", "").lower()
            if (site is not None and site not in ("same-origin", "none")) or (
                origin is not None and urlsplit(origin).netloc.lower() != host
            ):
                response = JSONResponse(
                    {"detail": "cross-origin request refused: uploads must come from this server's own page"},
                    status_code=403,
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)
