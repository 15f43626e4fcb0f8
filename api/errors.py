"""The only place where errors become HTTP responses.

=====================================  ======  =====================
error                                  status  ``error`` field
=====================================  ======  =====================
request validation (pydantic)          422     ``invalid_input``
``InvalidInputError`` / ``ModalityError``  422     ``invalid_input``
missing / wrong ``X-API-Key``           401     ``unauthorized``
``NotFoundError``                      404     ``not_found``
``BrokerError`` / ``StoreError``       503     ``unavailable``
``ArtifactError`` / ``ConfigError``    503     ``unavailable``
any other ``ColdstartError``           500     ``internal``
=====================================  ======  =====================

Bodies are :class:`api.schemas.ErrorOut`; validation errors name the field (dotted path, e.g.
``body.k``) and the rejected value.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from coldstart.errors import (
    ArtifactError,
    BrokerError,
    ColdstartError,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    StoreError,
)

log = logging.getLogger(__name__)


class UnauthorizedError(ColdstartError):
    """A request without a valid API key."""


def _body(error: str, message: str, param: str | None = None, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": error, "message": message}
    if param is not None:
        out["param"] = param
        out["value"] = jsonable_encoder(value, custom_encoder={bytes: lambda b: f"<{len(b)} bytes>"})
    return out


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(p) for p in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    value = first.get("input")
    message = f"{param}: {first.get('msg')}{more}"
    body = _body("invalid_input", message, param, value if not isinstance(value, dict) else None)
    body["errors"] = [
        {"param": ".".join(str(p) for p in e.get("loc", ())), "reason": e.get("msg")} for e in errors[:20]
    ]
    return JSONResponse(status_code=422, content=body)


async def _coldstart(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ColdstartError)
    return error_response(exc)


def error_response(exc: ColdstartError) -> JSONResponse:
    """The response to ``exc`` (the table above); also used by :mod:`api.direct`."""
    if isinstance(exc, InvalidInputError):
        return JSONResponse(status_code=422, content=_body("invalid_input", str(exc), exc.param, exc.value))
    if isinstance(exc, UnauthorizedError):
        return JSONResponse(
            status_code=401,
            content=_body("unauthorized", str(exc)),
            headers={"WWW-Authenticate": "X-API-Key"},
        )
    if isinstance(exc, NotFoundError):
        return JSONResponse(status_code=404, content=_body("not_found", str(exc)))
    if isinstance(exc, BrokerError | StoreError | ArtifactError | ConfigError):
        log.warning("%s: %s", type(exc).__name__, exc)
        return JSONResponse(
            status_code=503, content=_body("unavailable", str(exc)), headers={"Retry-After": "5"}
        )
    log.exception("unexpected coldstart error", exc_info=exc)
    return JSONResponse(status_code=500, content=_body("internal", str(exc)))


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ColdstartError, _coldstart)
