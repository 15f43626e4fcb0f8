"""``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import State, _api_key_header, check_api_key
from api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no auth)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: State) -> JSONResponse:
    """Ready when the pool is synced and a policy loaded; 503 otherwise (no auth).

    ``checks`` are probed, never older than a second: ``store`` = the online store answered a read,
    ``kafka`` = the broker accepts connections. Either one down does not fail readiness: slots are
    still served (as for unknown users while the store is away; ``degraded`` lists what is down)
    and writes answer 503 fast. Readiness fails only where this replica cannot serve slots at all.
    """
    store_ok = await asyncio.to_thread(state.store_healthy)
    checks = {
        "store": store_ok,
        "pool_synced": state.pool_synced,
        "policy": state.holder.current is not None,
        "kafka": state.broker is not None and state.broker.healthy,
    }
    ready = checks["pool_synced"] and checks["policy"]
    degraded = [name for name in ("store", "kafka") if not checks[name]]
    if state.broker is None:
        degraded.remove("kafka")  # switched off, not down
    body = Readiness(
        ready=ready,
        checks=checks,
        degraded=degraded,
        model_version=state.holder.current.version,
        pool_size=len(state.service),
    )
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request, state: State) -> Response:
    """Prometheus text format; needs ``X-API-Key`` unless ``api.metrics_public``."""
    if not state.settings.api.metrics_public:
        check_api_key(state, await _api_key_header(request))
    state.metrics.pool_size.set(len(state.service))
    state.metrics.set_model_version(state.holder.current.version)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
