"""Request limits enforced before any work: the API key, then the body size.

:class:`RequestGuard` is the outermost ASGI layer. For a route that needs ``X-API-Key`` (everything
under ``/v1/``, and ``/metrics`` unless it is public) a request without a valid key is answered 401
before a byte of its body is read. A body larger than ``api.max_body_bytes`` is answered 413, from
its ``Content-Length`` when it declares one, else as soon as the streamed body passes the limit; the
body that was read is handed to the app unchanged, so the direct slot path and FastAPI see the same
bytes. Both answers use the project's error format (:mod:`api.errors`).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import check_api_key
from api.errors import RequestTooLargeError, UnauthorizedError, error_response
from api.state import AppState

_PUBLIC = frozenset({"/healthz", "/readyz", "/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


def needs_key(path: str, metrics_public: bool) -> bool:
    """Whether ``path`` is served only with a valid ``X-API-Key``."""
    if path in _PUBLIC:
        return False
    if path == "/metrics":
        return not metrics_public
    return path.startswith("/v1/")


class RequestGuard:
    """ASGI middleware: authentication and the body limit, before the app reads anything.

    Parameters
    ----------
    app
        The wrapped ASGI app.
    state_of
        The app state built by the lifespan, or ``None`` before it exists (then only the default
        body limit applies and FastAPI authenticates as usual).
    default_max_body_bytes
        The limit until the state (with ``api.max_body_bytes``) exists.
    """

    def __init__(
        self,
        app: ASGIApp,
        state_of: Callable[[], AppState | None],
        default_max_body_bytes: int = 1024 * 1024,
    ) -> None:
        self.app = app
        self.state_of = state_of
        self.default_max_body_bytes = default_max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state_of()
        limit = self.default_max_body_bytes if state is None else state.settings.api.max_body_bytes
        key: str | None = None
        declared: bytes | None = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's Headers.get
            if name == b"x-api-key" and key is None:
                key = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value
        if state is not None and needs_key(scope["path"], state.settings.api.metrics_public):
            try:
                check_api_key(state, key)
            except UnauthorizedError as exc:
                await error_response(exc)(scope, receive, send)
                return
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send, limit)
            return
        body, more, over = await _read(receive, limit)
        if over:
            await self._too_large(scope, receive, send, limit)
            return
        await self.app(scope, _replay(body, more, receive), send)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(RequestTooLargeError(f"request body larger than {limit} bytes"))
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool, bool]:
    """The body up to ``limit`` bytes: ``(body, disconnected early, over the limit)``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # a disconnect: let the app see it
            return b"".join(chunks), True, False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False, True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False, False


def _replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """``receive`` that hands out the body already read, then what ``receive`` gives."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if disconnected:
        pending = [{"type": "http.disconnect"}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
