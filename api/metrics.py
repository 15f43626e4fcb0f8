"""Prometheus metrics of one API process (own registry, so several apps can live in one process).

Exposed at ``/metrics``:

* ``coldstart_http_request_duration_seconds{method,route,status}`` — request latency histogram;
* ``coldstart_exploration_slots_total{explored}`` — slots served, ``explored="true"`` when the item
  was not the policy's best-scored remaining candidate;
* ``coldstart_exploration_share`` — explored / served slots since start;
* ``coldstart_exploration_decisions_total{user}`` — decisions, ``user="known|unknown"``;
* ``coldstart_pool_size`` — cold items in the pool; ``coldstart_pool_on_schedule_share``;
* ``coldstart_model_version_info{version}`` (1 for the serving version), ``coldstart_model_reloads_total``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ApiMetrics:
    """The metric objects of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "coldstart_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.slots = Counter("coldstart_exploration_slots_total", "Slots served", ["explored"], registry=r)
        self.decisions = Counter(
            "coldstart_exploration_decisions_total", "Exploration decisions", ["user"], registry=r
        )
        self.exploration_share = Gauge(
            "coldstart_exploration_share", "Share of served slots that explored", registry=r
        )
        self.pool_size = Gauge("coldstart_pool_size", "Cold items in the candidate pool", registry=r)
        self.on_schedule = Gauge(
            "coldstart_pool_on_schedule_share",
            "Share of cold items at or above their exposure schedule",
            registry=r,
        )
        self.model_version = Gauge(
            "coldstart_model_version_info", "Serving policy version (1 = current)", ["version"], registry=r
        )
        self.reloads = Counter("coldstart_model_reloads_total", "Policy hot reloads", registry=r)
        self.graduations = Counter(
            "coldstart_graduations_total", "Items graduated out of the cold pool", ["reason"], registry=r
        )
        self._served = 0
        self._explored = 0
        self._version: str | None = None

    def observe_slots(self, served: int, explored: int, known_user: bool) -> None:
        """Count one decision."""
        self.decisions.labels(user="known" if known_user else "unknown").inc()
        if served - explored:
            self.slots.labels(explored="false").inc(served - explored)
        if explored:
            self.slots.labels(explored="true").inc(explored)
        self._served += served
        self._explored += explored
        if self._served:
            self.exploration_share.set(self._explored / self._served)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Time one HTTP request (``route``: the route's path template)."""
        self.latency.labels(method, route, str(status)).observe(seconds)

    def set_model_version(self, version: str) -> None:
        """Mark ``version`` as the serving one."""
        if version == self._version:
            return
        if self._version is not None:
            self.model_version.labels(version=self._version).set(0)
        self.model_version.labels(version=version).set(1)
        self._version = version


class LatencyMiddleware:
    """Pure ASGI middleware timing every HTTP request by route template (cheap: no body wrapping)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(
                scope.get("method", ""), path, status[0], time.perf_counter() - start
            )
