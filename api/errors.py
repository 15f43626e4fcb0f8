"""The only place where errors become HTTP responses.

=====================================  ======  =====================
error                                  status  ``error`` field
=====================================  ======  =====================
request validation (pydantic)          422     ``invalid_input``
``InvalidInputError`` / ``ModalityError``  422     ``invalid_input``
missing / wrong ``X-API-Key``           401     ``unauthorized``
body over ``api.max_body_bytes``        413     ``too_large``
``NotFoundError``                      404     ``not_found``
``BrokerError`` / ``StoreError``       503     ``unavailable``
``ArtifactError`` / ``ConfigError``    503     ``unavailable``
any other ``ColdstartError``           500     ``internal``
=====================================  ======  =====================

Bodies are :class:`api.schemas.ErrorOut`; validation errors name the field (dotted path, e.g.
``body.k``) and the rejected value, cut to 200 characters and rendered as ASCII JSON (a lone
surrogate or a control character in the input is escaped, never a rendering error).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

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


class RequestTooLargeError(ColdstartError):
    """A request body over ``api.max_body_bytes``."""


class ErrorResponse(JSONResponse):
    """JSON as ASCII: any echoed input (lone surrogates included) renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


_MAX_SHOWN = 200


def _shown(value: Any) -> Any:
    """The rejected value as the response shows it: scalars as they are, strings cut, the rest a repr."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, str):
        return value if len(value) <= _MAX_SHOWN else value[: _MAX_SHOWN - 3] + "..."
    try:
        encoded = jsonable_encoder(value, custom_encoder={bytes: lambda b: f"<{len(b)} bytes>"})
    except (ValueError, TypeError, RecursionError):
        return None
    text = json.dumps(encoded, ensure_ascii=True, default=str)
    return encoded if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _body(error: str, message: str, param: str | None = None, value: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"error": error, "message": message[:2000]}
    if param is not None:
        out["param"] = param[:500]
        out["value"] = _shown(value)
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
    return ErrorResponse(status_code=422, content=body)


async def _coldstart(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ColdstartError)
    return error_response(exc)


def error_response(exc: ColdstartError) -> JSONResponse:
    """The response to ``exc`` (the table above); also used by :mod:`api.direct`."""
    if isinstance(exc, InvalidInputError):
        return ErrorResponse(status_code=422, content=_body("invalid_input", str(exc), exc.param, exc.value))
    if isinstance(exc, UnauthorizedError):
        return ErrorResponse(
            status_code=401,
            content=_body("unauthorized", str(exc)),
            headers={"WWW-Authenticate": "X-API-Key"},
        )
    if isinstance(exc, RequestTooLargeError):
        return ErrorResponse(status_code=413, content=_body("too_large", str(exc)))
    if isinstance(exc, NotFoundError):
        return ErrorResponse(status_code=404, content=_body("not_found", str(exc)))
    if isinstance(exc, BrokerError | StoreError | ArtifactError | ConfigError):
        log.warning("%s: %s", type(exc).__name__, exc)
        return ErrorResponse(
            status_code=503, content=_body("unavailable", str(exc)), headers={"Retry-After": "5"}
        )
    log.exception("unexpected coldstart error", exc_info=exc)
    return ErrorResponse(status_code=500, content=_body("internal", str(exc)))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in the project's format."""
    assert isinstance(exc, StarletteHTTPException)
    names = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
    return ErrorResponse(
        status_code=exc.status_code,
        content=_body(names.get(exc.status_code, "http_error"), str(exc.detail)),
        headers=dict(exc.headers or {}),
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ColdstartError, _coldstart)
    app.add_exception_handler(StarletteHTTPException, _http)
