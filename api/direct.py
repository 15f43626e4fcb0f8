"""Serving the hot endpoint without FastAPI's per-request machinery.

``POST /v1/exploration/slots`` is called for every page a recommendation API renders. For it,
FastAPI's per-request work (six middleware layers, routing through the included routers, a
``Request``, dependency solving, JSON decoding to Python objects and validating those) costs about
0.3 ms of CPU on a 2-core development machine: a fifth of the whole request, the slot service
included.

:class:`DirectRoutes` is an ASGI middleware that serves a *well-formed, authorised* request to such a
route itself: it reads the body, checks the API key (:func:`api.deps.check_api_key`), validates the
body with the route's request model in pydantic-core (``model_validate_json``: no Python dicts on the
way) and calls the same handler function as the FastAPI route. Everything else goes to the FastAPI
app unchanged, the buffered body replayed: another path or method, a missing or wrong key, a body
that fails validation, a content type other than JSON, a body over ``max_body_bytes``, a request
arriving before the lifespan has built the state. So every error response still comes from
``api/errors.py``, and OpenAPI documents the route as before. An error the *handler* raises (after
validation) is turned into its response by the same function FastAPI's handler uses
(:func:`api.errors.error_response`), not retried.

Requests it serves are timed into the same latency histogram as :class:`api.metrics.LatencyMiddleware`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import check_api_key
from api.errors import UnauthorizedError, error_response
from api.state import AppState
from coldstart.errors import ColdstartError

_JSON_HEADERS = [(b"content-type", b"application/json")]


@dataclass(frozen=True)
class DirectRoute:
    """A JSON route that :class:`DirectRoutes` may serve itself.

    Parameters
    ----------
    method, path
        The route (exact path, no parameters), as declared on the FastAPI router.
    model
        The request body's model (the FastAPI route's body parameter).
    handler
        ``handler(state, body) -> bytes``: the JSON response body (status 200); the FastAPI route
        calls the same function.
    """

    method: str
    path: str
    model: type[BaseModel]
    handler: Callable[[AppState, Any], bytes]


class DirectRoutes:
    """ASGI middleware: serves the well-formed requests of ``routes`` itself (see the module docstring).

    Parameters
    ----------
    app
        The wrapped ASGI app (the rest of the FastAPI middleware stack).
    routes
        Routes to serve directly.
    state_of
        Returns the app state built by the lifespan, or ``None`` before it exists.
    max_body_bytes
        Larger bodies go to FastAPI.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: Sequence[DirectRoute],
        state_of: Callable[[], AppState | None],
        max_body_bytes: int = 256 * 1024,
    ) -> None:
        self.app = app
        self.routes = {(r.method, r.path): r for r in routes}
        self.state_of = state_of
        self.max_body_bytes = max_body_bytes
        self.served = 0
        """Requests answered here (the rest went to FastAPI)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = None
        if scope["type"] == "http":
            route = self.routes.get((scope["method"], scope["path"]))
        state = self.state_of() if route is not None else None
        if route is None or state is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        key: str | None = None
        content_type: bytes | None = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"x-api-key" and key is None:
                key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.lower()
        json_body = content_type is None or b"json" in content_type
        body, more = await self._read_body(receive)
        if more or not json_body or not self._authorised(state, key):
            await self.app(scope, _replay(body, more, receive), send)
            return
        try:
            request = route.model.model_validate_json(body)
        except ValidationError:  # FastAPI answers with the canonical 422 (api/errors.py)
            await self.app(scope, _replay(body, False, receive), send)
            return
        try:
            payload = route.handler(state, request)
            status = 200
        except ColdstartError as exc:
            response = error_response(exc)
            await response(scope, receive, send)
            status = response.status_code
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": payload})
        self.served += 1
        state.metrics.observe_request(route.method, route.path, status, time.perf_counter() - start)

    async def _read_body(self, receive: Receive) -> tuple[bytes, bool]:
        """The body, and whether reading stopped early (more than ``max_body_bytes``)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # a disconnect: let the app see it
                return b"".join(chunks), True
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False
            if size > self.max_body_bytes:
                return b"".join(chunks), True

    @staticmethod
    def _authorised(state: AppState, key: str | None) -> bool:
        try:
            check_api_key(state, key)
        except UnauthorizedError:
            return False
        return True


def _replay(body: bytes, more: bool, receive: Receive) -> Receive:
    """``receive`` that first hands out what was already read (then the rest, from ``receive``)."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": more}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
