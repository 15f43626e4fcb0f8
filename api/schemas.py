"""Request and response models of the HTTP API (separate classes; ``extra="forbid"`` on requests)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from coldstart.contracts import MAX_ATTRIBUTES, NO_CONTROL, AttributeKey, AttributeValue, Id

#: A short label (category, context key or value): no control characters.
Label = Annotated[str, StringConstraints(max_length=1000, pattern=NO_CONTROL)]
ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_CONTROL)]
# a bool is checked first: in strict mode true is not 1
ContextNumber = Annotated[float, Field(strict=True, ge=-1e9, le=1e9)]
ContextValue = StrictBool | ContextNumber | Label
#: http or https only (the scheme is checked again at fetch time, with the egress policy).
HttpUrl = Annotated[
    str, StringConstraints(min_length=8, max_length=4096, pattern=r"^[hH][tT][tT][pP][sS]?://\S+$")
]
#: Standard base64 with padding (what ``base64.b64decode(validate=True)`` accepts).
Base64 = Annotated[
    str,
    StringConstraints(
        min_length=4,
        max_length=1_000_000,  # below api.max_body_bytes' default
        pattern=r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    ),
]


def _keys_by_property_names(schema: dict[str, Any]) -> None:
    """State a map's key pattern as ``propertyNames`` (pydantic writes ``patternProperties``, which
    leaves keys that do not match unconstrained) and its values as ``additionalProperties``."""
    patterns = schema.pop("patternProperties", None)
    if not patterns:
        return
    (pattern, values), *_ = patterns.items()
    schema.setdefault("propertyNames", {})["pattern"] = pattern
    schema["additionalProperties"] = values


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- exploration
class SlotFilters(_Request):
    """Candidate restrictions (empty = none)."""

    category: list[Label] = Field(default_factory=list, max_length=100)
    seller: list[Id] = Field(default_factory=list, max_length=100)


class SlotsRequest(_Request):
    """Ask for ``k`` exploration slots for one user."""

    user_id: Id
    context: dict[ContextKey, ContextValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Free-form request features: numbers, booleans or categorical strings.",
        json_schema_extra=_keys_by_property_names,
        examples=[{"device": "mobile", "hour": 21, "page": "home"}],
    )
    k: StrictInt = Field(ge=1, le=50, description="Number of slots, 1..50 (an integer, not a string).")
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
    degraded: Literal["user_store_unavailable"] | None = Field(
        default=None,
        description="Present when the answer is degraded: user_store_unavailable = the online store "
        "did not answer, the slots were chosen as for an unknown user.",
    )


# --------------------------------------------------------------------------- items
class ImageIn(_Request):
    """Exactly one of ``url`` (http/https), ``path`` (a file under the encoder worker's configured
    image roots) or ``base64`` (the encoded image bytes)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["url"]}, {"required": ["path"]}, {"required": ["base64"]}],
        },
    )

    # null is accepted but not advertised: the schema says "exactly one of the three keys"
    url: HttpUrl | SkipJsonSchema[None] = None
    path: (
        Annotated[str, StringConstraints(min_length=1, max_length=4096, pattern=NO_CONTROL)]
        | SkipJsonSchema[None]
    ) = None
    base64: Base64 | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageIn:
        given = [n for n in ("url", "path", "base64") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"exactly one of url / path / base64 must be given, got {given or 'none'}")
        return self


_HAS_TEXT = r"\S"


class ItemIn(_Request):
    """A newly listed item (published as an ``ItemListed`` event on ``items.listed``).

    It needs an ``image`` or some text: a ``title``, ``description`` or ``category`` with a
    non-blank character.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["image"], "properties": {"image": {"type": "object"}}},
                {"properties": {"title": {"pattern": _HAS_TEXT}}},
                {"required": ["description"], "properties": {"description": {"pattern": _HAS_TEXT}}},
                {"required": ["category"], "properties": {"category": {"pattern": _HAS_TEXT}}},
            ]
        },
    )

    item_id: Id
    title: str = Field(max_length=2000)
    description: str = Field(default="", max_length=100_000)
    category: str = Field(default="", max_length=1000)
    attributes: dict[AttributeKey, AttributeValue] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES, json_schema_extra=_keys_by_property_names
    )
    image: ImageIn | None = None
    seller_id: Id
    listed_at: AwareDatetime | None = Field(default=None, description="Default: now.")

    @model_validator(mode="after")
    def _has_content(self) -> ItemIn:
        if self.image is None and not any(t.strip() for t in (self.title, self.description, self.category)):
            raise ValueError("give an image or a non-blank title, description or category")
        return self


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
    value: StrictFloat | None = Field(
        default=None, ge=-1e12, le=1e12, description="Required for kind=rating."
    )
    ts: AwareDatetime | None = Field(default=None, description="Default: now.")
    decision_id: Id | None = None
    position: StrictInt | None = Field(default=None, ge=0, le=10_000)

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "if": {"properties": {"kind": {"const": "rating"}}, "required": ["kind"]},
            "then": {"required": ["value"], "properties": {"value": {"type": "number"}}},
        },
    )

    @model_validator(mode="after")
    def _rating_value(self) -> InteractionIn:
        if self.kind == "rating" and self.value is None:
            raise ValueError("kind='rating' needs a value")
        return self


# --------------------------------------------------------------------------- search
class SearchImageRequest(_Request):
    """Search cold items by an image (base64 of the encoded bytes)."""

    image_base64: Base64
    k: StrictInt = Field(default=10, ge=1, le=100)
    category: list[Label] = Field(default_factory=list, max_length=100)
    seller: list[Id] = Field(default_factory=list, max_length=100)


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
    degraded: list[str] = Field(default_factory=list, description="Dependencies that are down now.")
    model_version: str
    pool_size: int


class ErrorOut(BaseModel):
    """Every error response: ``param`` and ``value`` name the offending input when there is one."""

    error: str
    message: str
    param: str | None = None
    value: object | None = None
