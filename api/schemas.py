"""Request and response models of the HTTP API (separate classes; ``extra="forbid"`` on requests)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ContextValue = float | int | bool | str


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- exploration
class SlotFilters(_Request):
    """Candidate restrictions (empty = none)."""

    category: list[Annotated[str, StringConstraints(max_length=1000)]] = Field(
        default_factory=list, max_length=100
    )
    seller: list[Id] = Field(default_factory=list, max_length=100)


class SlotsRequest(_Request):
    """Ask for ``k`` exploration slots for one user."""

    user_id: Id
    context: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], ContextValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Free-form request features: numbers, booleans or categorical strings.",
        examples=[{"device": "mobile", "hour": 21, "page": "home"}],
    )
    k: int = Field(ge=1, le=50, description="Number of slots, 1..50.")
    exclude_item_ids: list[Id] = Field(default_factory=list, max_length=1000)
    filters: SlotFilters = Field(default_factory=SlotFilters)


class SlotOut(BaseModel):
    """One slot: the item, its position (0-based), the probability it was drawn with, the model score."""

    item_id: str
    position: int
    propensity: float
    score: float


class SlotsResponse(BaseModel):
    """The decision: log ``decision_id`` with the impressions and interactions of these slots."""

    decision_id: str
    model_version: str
    slots: list[SlotOut]


# --------------------------------------------------------------------------- items
class ImageIn(_Request):
    """Exactly one of ``url`` (http/https), ``path`` (a file the encoder worker can read) or
    ``base64`` (the encoded image bytes)."""

    url: str | None = None
    path: str | None = None
    base64: str | None = None


class ItemIn(_Request):
    """A newly listed item (published as an ``ItemListed`` event on ``items.listed``)."""

    item_id: Id
    title: str = Field(max_length=2000)
    description: str = Field(default="", max_length=100_000)
    category: str = Field(default="", max_length=1000)
    attributes: dict[str, str] = Field(default_factory=dict)
    image: ImageIn | None = None
    seller_id: Id
    listed_at: AwareDatetime | None = Field(default=None, description="Default: now.")


class Accepted(BaseModel):
    """The event was accepted by the broker."""

    status: Literal["accepted"] = "accepted"
    topic: str
    key: str


class ItemOut(BaseModel):
    """An item as the feature store and the cold pool see it."""

    item_id: str
    status: str
    in_cold_pool: bool
    image_ok: bool
    text_ok: bool
    category: str
    seller_id: str
    listed_at: datetime
    updated_at: datetime
    encoder_version: str
    impressions: int
    clicks: int
    content_vector: list[float] | None = None
    item_vector: list[float] | None = None


# --------------------------------------------------------------------------- interactions
class InteractionIn(_Request):
    """A user's interaction (published on ``interactions``; joined to its decision by the learner)."""

    event_id: Id | None = Field(default=None, description="Default: a fresh UUID.")
    user_id: Id
    item_id: Id
    kind: Literal["impression", "click", "add_to_cart", "purchase", "rating"]
    value: float | None = None
    ts: AwareDatetime | None = Field(default=None, description="Default: now.")
    decision_id: Id | None = None
    position: int | None = Field(default=None, ge=0)


# --------------------------------------------------------------------------- search
class SearchImageRequest(_Request):
    """Search cold items by an image (base64 of the encoded bytes)."""

    image_base64: str = Field(min_length=1)
    k: int = Field(default=10, ge=1, le=100)
    category: list[str] = Field(default_factory=list)
    seller: list[str] = Field(default_factory=list)


class SearchHit(BaseModel):
    """A cold item and its cosine similarity to the query in the shared image/text space."""

    item_id: str
    score: float


class SearchResponse(BaseModel):
    """Best first."""

    query: Literal["text", "image"]
    hits: list[SearchHit]


# --------------------------------------------------------------------------- health
class Health(BaseModel):
    """Liveness."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """Readiness and what it depends on."""

    ready: bool
    checks: dict[str, bool]
    model_version: str
    pool_size: int


class ErrorOut(BaseModel):
    """Every error response: ``param`` and ``value`` name the offending input when there is one."""

    error: str
    message: str
    param: str | None = None
    value: object | None = None
