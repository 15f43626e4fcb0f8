"""FastAPI dependencies (``Annotated`` aliases): the app state, and the app state behind API-key auth.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, a
thread hop (and a GIL hand-over) per dependency per request, which is most of the framework's cost on
the hot path; these functions do not block, so they run on the event loop.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from api.errors import UnauthorizedError
from api.state import AppState

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="One of settings.api.api_keys")


async def get_state(request: Request) -> AppState:
    """The state built by the lifespan."""
    state: AppState = request.app.state.coldstart
    return state


State = Annotated[AppState, Depends(get_state)]


def check_api_key(state: AppState, key: str | None) -> str:
    """Accept only a configured ``X-API-Key`` (constant-time comparison); :class:`UnauthorizedError` else."""
    if not key:
        raise UnauthorizedError("missing X-API-Key header")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in state.settings.api.api_keys):
        raise UnauthorizedError("invalid API key")
    return key


async def authorized_state(
    request: Request, key: Annotated[str | None, Security(_api_key_header)]
) -> AppState:
    """The app state, for a request with a configured ``X-API-Key`` (constant-time comparison).

    One dependency for both: FastAPI solves every dependency of a route on every request (~50 us
    each on the slot path's budget of a few ms), so authenticated routes take this one alone.
    """
    state: AppState = request.app.state.coldstart
    check_api_key(state, key)
    return state


Authorized = Annotated[AppState, Depends(authorized_state)]
