"""``POST /v1/items`` (publish ``ItemListed``) and ``GET /v1/items/{item_id}``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, status
from pydantic import ValidationError

from api.deps import Authorized, State
from api.schemas import Accepted, ErrorOut, ItemIn, ItemOut
from coldstart.contracts import NO_CONTROL, ItemListed, now_utc
from coldstart.errors import InvalidInputError, NotFoundError
from coldstart.topics import ITEMS_LISTED

router = APIRouter(prefix="/v1/items", tags=["items"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut},
    422: {"model": ErrorOut},
    503: {"model": ErrorOut},
}


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Accepted, responses=_ERRORS)
async def publish_item(body: ItemIn, state: Authorized) -> Accepted:
    """Publish an ``ItemListed`` event on ``items.listed`` (for backends that prefer HTTP to Kafka).

    The encoder worker embeds it and it joins the cold pool; the answer comes once the broker has it.
    """

    try:
        event = ItemListed.model_validate(
            {**body.model_dump(exclude_none=True), "listed_at": body.listed_at or now_utc()}
        )
    except ValidationError as exc:
        raise _invalid(exc, "body") from None
    await _publish(state, lambda p: p.publish_item(event))
    return Accepted(topic=ITEMS_LISTED, key=event.item_id)


@router.get(
    "/{item_id}", response_model=ItemOut, responses={401: {"model": ErrorOut}, 404: {"model": ErrorOut}}
)
async def get_item(
    item_id: Annotated[str, Path(min_length=1, max_length=256, pattern=NO_CONTROL)],
    state: Authorized,
    vectors: bool = Query(default=True, description="Include content_vector and item_vector."),
) -> ItemOut:
    """An item's vectors, modality flags, status and exposure counters."""
    if state.store is None:
        raise NotFoundError(f"item {item_id!r}: no feature store")
    found = (await asyncio.to_thread(state.store.get_items, [item_id])).get(item_id)
    if found is None:
        raise NotFoundError(f"item {item_id!r} not found")
    exposure = state.service.pacer.get(item_id)
    return ItemOut(
        item_id=found.item_id,
        status=found.status,
        in_cold_pool=state.service.entry(item_id) is not None,
        image_ok=found.image_ok,
        text_ok=found.text_ok,
        category=found.category,
        seller_id=found.seller_id,
        listed_at=found.listed_at,
        updated_at=found.updated_at,
        encoder_version=found.encoder_version,
        impressions=max(found.impressions, exposure.impressions if exposure else 0),
        clicks=max(found.clicks, exposure.clicks if exposure else 0),
        content_vector=[float(x) for x in found.content_vector] if vectors else None,
        item_vector=[float(x) for x in found.item_vector] if vectors else None,
    )


def _invalid(exc: ValidationError, prefix: str) -> InvalidInputError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *first["loc"]))
    return InvalidInputError(loc, first.get("input"), str(first["msg"]))


async def _publish(state: State, send: Callable[[Any], Any]) -> None:
    await asyncio.to_thread(state.publish, send)  # BrokerError (503) within api.publish_timeout_ms
