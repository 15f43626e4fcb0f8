"""``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import State, check_api_key
from api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (no auth)."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(state: State) -> JSONResponse:
    """Ready when the store is open, the pool synced and a policy loaded; 503 otherwise (no auth).

    A configured but unreachable Kafka is reported (``kafka: false``) without failing readiness:
    slots are still served, the decision log then relies on the offline store.
    """
    checks = {
        "store": state.store is not None,
        "pool_synced": state.pool_synced,
        "policy": state.holder.current is not None,
        "kafka": state.broker is not None and state.broker.healthy,
    }
    ready = checks["store"] and checks["pool_synced"] and checks["policy"]
    body = Readiness(
        ready=ready, checks=checks, model_version=state.holder.current.version, pool_size=len(state.service)
    )
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request, state: State) -> Response:
    """Prometheus text format; needs ``X-API-Key`` unless ``api.metrics_public``."""
    if not state.settings.api.metrics_public:
        from api.deps import _api_key_header

        check_api_key(state, await _api_key_header(request))
    state.metrics.pool_size.set(len(state.service))
    state.metrics.set_model_version(state.holder.current.version)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
