"""``GET /v1/search`` (text or image URL) and ``POST /v1/search/image`` over cold items.

Queries are embedded with the encoder's query methods into the shared image/text space and matched
(cosine) against the cold items' content vectors.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import StringConstraints

from api.deps import Authorized, State
from api.schemas import ErrorOut, SearchHit, SearchImageRequest, SearchResponse
from coldstart.contracts import NO_CONTROL, ImageRef
from coldstart.errors import ConfigError, InvalidInputError
from exploration.pool.base import PoolFilter
from stream.images import ImageFetcher

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/search", tags=["search"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    422: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


@router.get("", response_model=SearchResponse, responses=_ERRORS)
async def search(
    state: Authorized,
    text: str | None = Query(
        default=None, min_length=1, max_length=2000, pattern=r"\S", description="Free-text query."
    ),
    image_url: str | None = Query(
        default=None,
        min_length=8,
        max_length=4096,
        pattern=r"^[hH][tT][tT][pP][sS]?://\S+$",
        description="http(s) URL of a query image.",
    ),
    k: int = Query(default=10, ge=1, le=100),
    category: Annotated[
        list[Annotated[str, StringConstraints(max_length=1000, pattern=NO_CONTROL)]] | None,
        Query(max_length=100),
    ] = None,
    seller: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_CONTROL)]] | None,
        Query(max_length=100),
    ] = None,
) -> SearchResponse:
    """Cold items nearest to a text or an image (exactly one of ``text`` / ``image_url``)."""
    if (text is None) == (image_url is None):
        raise InvalidInputError("query.text", text, "give exactly one of text or image_url")
    filters = PoolFilter(categories=tuple(category or ()), sellers=tuple(seller or ()))
    if text is not None:
        return await _run(state, "text", text.encode(), k, filters)

    if not image_url or not image_url.lower().startswith(("http://", "https://")):
        raise InvalidInputError("query.image_url", image_url, "must be an http:// or https:// URL")

    def fetch() -> bytes:
        fetcher = ImageFetcher(state.settings.kafka.images)
        try:
            result = fetcher.fetch(ImageRef(url=image_url))
        finally:
            fetcher.close()
        if result.data is None:
            # what answered (refused, closed, HTTP 401...) stays in the log: telling the client would
            # make this endpoint a port scanner of the network the API runs in
            log.info("search image_url not fetched: %s (%s)", result.error, result.detail)
            raise InvalidInputError("query.image_url", image_url, "image could not be fetched")
        return result.data

    data = await asyncio.to_thread(fetch)
    return await _run(state, "image", data, k, filters)


@router.post("/image", response_model=SearchResponse, responses=_ERRORS)
async def search_image(body: SearchImageRequest, state: Authorized) -> SearchResponse:
    """Cold items nearest to an image given inline (base64 of the encoded bytes)."""
    try:
        data = base64.b64decode(body.image_base64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            "body.image_base64", body.image_base64[:40], f"not valid base64 ({exc})"
        ) from None
    if len(data) > state.settings.api.max_image_bytes:
        raise InvalidInputError("body.image_base64", f"<{len(data)} bytes>", "image too large")
    filters = PoolFilter(categories=tuple(body.category), sellers=tuple(body.seller))
    return await _run(state, "image", data, body.k, filters)


async def _run(state: State, kind: str, payload: bytes, k: int, filters: PoolFilter) -> SearchResponse:
    pool = state.search_pool
    if pool is None:
        raise ConfigError("search is disabled (api.search_index=false)")

    def embed() -> np.ndarray:
        encoder = state.encoder()
        if kind == "text":
            q = encoder.encode_text_query([payload.decode()])
        else:
            q = encoder.encode_image_query([payload])
        out: np.ndarray = np.asarray(q, dtype=np.float32)[0]
        return out

    query = await asyncio.to_thread(embed)
    if not np.all(np.isfinite(query)) or not np.any(query):
        param = "query.text" if kind == "text" else "image"
        raise InvalidInputError(
            param, f"<{len(payload)} bytes>", "could not be embedded (undecodable image?)"
        )
    hits = pool.search(query, k, filters)
    return SearchResponse(
        query="text" if kind == "text" else "image",
        hits=[SearchHit(item_id=h.item_id, score=h.score) for h in hits],
    )
