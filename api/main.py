"""The FastAPI app factory.

``create_app()`` returns an app whose lifespan builds the process's :class:`~coldstart.settings.Settings`
(unless given) and its :class:`~api.state.AppState`; nothing is built at import time. OpenAPI docs are
served at ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager

from fastapi import FastAPI

from api.direct import DirectRoutes
from api.errors import install_error_handlers
from api.limits import RequestGuard
from api.metrics import ApiMetrics, LatencyMiddleware
from api.routes import exploration, health, interactions, items, search
from api.state import AppState, build_state
from coldstart.process import settled_heap
from coldstart.settings import Settings, get_settings

#: Routes that :class:`api.direct.DirectRoutes` serves without FastAPI's per-request machinery.
DIRECT_ROUTES = (exploration.DIRECT,)


def create_app(
    settings: Settings | None = None,
    *,
    state_factory: Callable[[Settings], AppState] | None = None,
) -> FastAPI:
    """Build the app.

    Parameters
    ----------
    settings
        Process settings; default: :func:`coldstart.settings.get_settings` in the lifespan.
    state_factory
        Builds the runtime state from settings (default :func:`api.state.build_state`).
    """
    metrics_holder: dict[str, ApiMetrics] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or get_settings()
        # BLAS limits (set before the state is built) and the frozen heap, undone after shutdown
        with ExitStack() as process:
            if s.api.blas_threads is not None:
                from threadpoolctl import threadpool_limits

                process.enter_context(threadpool_limits(s.api.blas_threads, user_api="blas"))
            state = (state_factory or build_state)(s)
            if s.api.blas_threads is not None:
                # building the state loads more BLAS libraries (scipy's own OpenBLAS, through Feast):
                # they start with their default thread count, so the limits are applied again
                process.enter_context(threadpool_limits(s.api.blas_threads, user_api="blas"))
            app.state.coldstart = state
            if s.api.gc_freeze:
                # start-up leaves ~10^6 long-lived objects (feast, pandas, torch modules, the pool): move
                # them out of the collector's reach so that a full collection on the request path scans
                # only what requests allocate (a gen-2 pass over everything costs tens of ms of p99);
                # the default young threshold stays (short pauses on the request path)
                process.enter_context(settled_heap())
            # background threads (offline sink, maintenance, Kafka feeds) run Python in bursts; a request
            # that arrives meanwhile waits for the GIL up to the switch interval (5 ms by default)
            old_interval = sys.getswitchinterval()
            sys.setswitchinterval(s.api.gil_switch_interval_s)
            metrics_holder["m"] = state.metrics
            state.start_background()
            try:
                yield
            finally:
                await state.aclose()
                sys.setswitchinterval(old_interval)

    app = FastAPI(
        title="coldstart",
        version="0.1.0",
        summary="Exploration slots for cold marketplace items, chosen by a contextual bandit.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(exploration.router)
    app.include_router(items.router)
    app.include_router(interactions.router)
    app.include_router(search.router)
    app.add_middleware(_LazyLatency, metrics_holder=metrics_holder)

    def direct_state() -> AppState | None:
        state: AppState | None = getattr(app.state, "coldstart", None)
        return state if state is not None and state.settings.api.direct_routes else None

    # each direct route is also a FastAPI route (OpenAPI, errors, the fallback): tests/api/test_direct.py
    app.add_middleware(DirectRoutes, routes=DIRECT_ROUTES, state_of=direct_state)

    def any_state() -> AppState | None:
        state: AppState | None = getattr(app.state, "coldstart", None)
        return state

    # outermost of ours: the key and the body limit are checked before anything reads the body
    app.add_middleware(RequestGuard, state_of=any_state)
    return app


class _LazyLatency:
    """:class:`LatencyMiddleware` bound to the metrics the lifespan creates."""

    def __init__(self, app: object, metrics_holder: dict[str, ApiMetrics]) -> None:
        self.app = app
        self.metrics_holder = metrics_holder
        self._inner: LatencyMiddleware | None = None

    async def __call__(self, scope: dict[str, object], receive: object, send: object) -> None:
        metrics = self.metrics_holder.get("m")
        if metrics is None or scope.get("type") != "http":
            await self.app(scope, receive, send)  # type: ignore[operator]
            return
        if self._inner is None or self._inner.metrics is not metrics:
            self._inner = LatencyMiddleware(self.app, metrics)  # type: ignore[arg-type]
        await self._inner(scope, receive, send)  # type: ignore[arg-type]
