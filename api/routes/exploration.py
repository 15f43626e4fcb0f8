"""``POST /v1/exploration/slots``: exploration slots chosen by the contextual bandit."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Authorized
from api.direct import DirectRoute
from api.schemas import ErrorOut, SlotOut, SlotsRequest, SlotsResponse
from api.state import AppState
from exploration.service import SlotRequest

router = APIRouter(prefix="/v1/exploration", tags=["exploration"])


@router.post(
    "/slots",
    response_model=SlotsResponse,
    responses={401: {"model": ErrorOut}, 422: {"model": ErrorOut}, 503: {"model": ErrorOut}},
    summary="Choose k exploration slots among cold items for one user",
)
async def choose_slots(body: SlotsRequest, state: Authorized) -> Response:
    """Candidates are the top-M cold items by similarity to the user's vector (unknown users: context
    only, the items most behind their exposure schedule), scored by the bandit; ``k`` are sampled
    without replacement. ``propensity`` is the probability the item was drawn with at its position;
    log ``decision_id`` (and ``position``) with the interactions so the bandit learns from them."""
    return Response(content=slots_json(state, body), media_type="application/json")


def slots_json(state: AppState, body: SlotsRequest) -> bytes:
    """The slots response of one validated request, as JSON (the route's body; see :data:`DIRECT`)."""
    context = {key: float(v) if isinstance(v, bool | int) else v for key, v in body.context.items()}
    result = state.service.select(
        SlotRequest(
            user_id=body.user_id,
            k=body.k,
            context=context,
            exclude_item_ids=frozenset(body.exclude_item_ids),
            categories=tuple(body.filters.category),
            sellers=tuple(body.filters.seller),
        )
    )
    d = result.draft
    state.metrics.observe_slots(len(d.slots), result.explored, result.known_user)
    out = SlotsResponse(
        decision_id=d.decision_id,
        model_version=d.model_version,
        slots=[
            SlotOut(item_id=s.item_id, position=s.position, propensity=s.propensity, score=s.score)
            for s in d.slots
        ],
        degraded=result.degraded,  # type: ignore[arg-type]
    )
    # serialised here: a returned model would be validated again against response_model by FastAPI
    return out.model_dump_json(exclude_none=True).encode("utf-8")


#: Well-formed, authorised slot requests are served by :class:`api.direct.DirectRoutes` with the
#: same handler; everything else (errors included) goes through the route above.
DIRECT = DirectRoute("POST", "/v1/exploration/slots", SlotsRequest, slots_json)
