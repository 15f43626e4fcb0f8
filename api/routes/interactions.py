"""``POST /v1/interactions``: publish an ``Interaction`` event (the learner joins it to its decision)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status
from pydantic import ValidationError

from api.deps import Authorized
from api.routes.items import _invalid, _publish
from api.schemas import Accepted, ErrorOut, InteractionIn
from coldstart.contracts import Interaction, now_utc
from coldstart.topics import INTERACTIONS

router = APIRouter(prefix="/v1/interactions", tags=["interactions"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Accepted,
    responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
)
async def publish_interaction(body: InteractionIn, state: Authorized) -> Accepted:
    """Publish on ``interactions`` (key ``user_id``). Send ``decision_id``/``position`` for items that
    came from exploration slots: that is how the bandit gets its reward."""

    try:
        event = Interaction(
            event_id=body.event_id or uuid.uuid4().hex,
            user_id=body.user_id,
            item_id=body.item_id,
            kind=body.kind,
            value=body.value,
            ts=body.ts or now_utc(),
            decision_id=body.decision_id,
            position=body.position,
        )
    except ValidationError as exc:
        raise _invalid(exc, "body") from None
    await _publish(state, lambda p: p.publish_interaction(event))
    if state.settings.exploration.rewards.by_kind.get(event.kind, 0.0) > 0:
        state.service.pacer.record_click(event.item_id, key=event.count_key())
    return Accepted(topic=INTERACTIONS, key=event.user_id)
