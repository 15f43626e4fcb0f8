"""Event contracts: the JSON records on coldstart's topics (versioned by ``schema_version``).

Every event is a pydantic model with ``extra="forbid"``; it is UTF-8 JSON on the wire
(:func:`encode_event` / :func:`decode_event`). Timestamps must carry a timezone and are normalised
to UTC. A consumer that cannot decode a record sends it to the topic's dead-letter queue as a
:class:`DeadLetter`, which keeps the original bytes (base64) and the source coordinates.

============================  ================  =======  ==========================================
topic                         record            key      produced by
============================  ================  =======  ==========================================
``items.listed``              :class:`ItemListed`  item_id  marketplace backends
``interactions``              :class:`Interaction` user_id  recommendation APIs / frontends
``decisions``                 ``coldstart.decisions.Decision``  user_id  the exploration API
``items.stored``              :class:`ItemStored`  item_id  the encoder worker, after each write
``warmup.item_evidence``      :class:`ItemEvidence` item_id  the learners' user side (partitioned)
``items.listed.dlq``          :class:`DeadLetter`  source key  the encoder worker
``interactions.dlq``          :class:`DeadLetter`  source key  the interaction consumers
============================  ================  =======  ==========================================
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from coldstart.errors import InvalidInputError

SCHEMA_VERSION: Literal[1] = 1
"""The current schema version of every event contract (bumped on an incompatible change)."""

InteractionKind = Literal["impression", "click", "add_to_cart", "purchase", "rating"]

_MAX_ID = 256
#: No C0 control characters (NUL included) and no DEL; pydantic itself rejects lone surrogates.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"

#: An id (item, user, seller, event, decision): 1-256 characters, no control characters.
Id = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_ID, pattern=NO_CONTROL)]

#: Largest record value a consumer parses; a larger one is dead-lettered unread. Kafka's default
#: ``message.max.bytes`` is about 1 MB, so a legitimate event never comes near it.
MAX_EVENT_BYTES = 1024 * 1024
#: Most entries of ``ItemListed.attributes``, and the longest key and value.
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_KEY = 128
MAX_ATTRIBUTE_VALUE = 1_000

#: An attribute key or value: bounded, without control characters.
AttributeKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_KEY, pattern=NO_CONTROL)
]
AttributeValue = Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE)]


class Event(BaseModel):
    """Base of every event: strict fields, immutable, ``schema_version`` first."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION

    @field_validator("*", mode="after")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return value


class ImageRef(BaseModel):
    """Where an item's image is: exactly one of ``url`` (http/https), ``path`` (a file the worker can
    read) or ``base64`` (the encoded image bytes inline)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = Field(default=None, max_length=4096)
    path: str | None = Field(default=None, max_length=4096)
    base64: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("base64")
    @classmethod
    def _valid_base64(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"not valid base64 ({exc})") from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageRef:
        given = [name for name in ("url", "path", "base64") if getattr(self, name) not in (None, "")]
        if len(given) != 1:
            raise ValueError(f"exactly one of url / path / base64 must be given, got {given or 'none'}")
        return self

    @property
    def kind(self) -> Literal["url", "path", "base64"]:
        """Which source the reference names."""
        if self.url:
            return "url"
        if self.path:
            return "path"
        return "base64"


class ItemListed(Event):
    """A new (or re-listed) item, published by a marketplace backend on ``items.listed`` (key ``item_id``).

    Parameters
    ----------
    item_id
        The item's id (opaque, 1-256 characters).
    title, description, category
        Free text; the encoder reads ``"{title}. {category}. {description}"`` plus the attributes.
    attributes
        Free-form string attributes (brand, colour, size...).
    image
        Where the image is, or ``None`` for a text-only item.
    seller_id
        The seller's id.
    listed_at
        When the item was listed (timezone-aware; stored as UTC). It is the row's event timestamp in
        the feature store, so re-delivering the event rewrites the same row.
    """

    item_id: Id
    title: str = Field(max_length=2_000)
    description: str = Field(default="", max_length=100_000)
    category: str = Field(default="", max_length=1_000)
    attributes: dict[AttributeKey, AttributeValue] = Field(default_factory=dict, max_length=MAX_ATTRIBUTES)
    image: ImageRef | None = None
    seller_id: Id
    listed_at: AwareDatetime

    @model_validator(mode="after")
    def _has_content(self) -> ItemListed:
        if not self.text().strip() and self.image is None:
            raise ValueError("the item has neither text (title/description/category) nor an image")
        return self

    def text(self) -> str:
        """The text the encoder reads: ``"{title}. {category}. {description}"`` (empty parts skipped),
        then ``"key: value"`` attributes, the same order as ``models.catalog.CatalogItem.full_text``."""
        parts = [p.strip() for p in (self.title, self.category, self.description)]
        text = ". ".join(p.rstrip(".") if i < 2 else p for i, p in enumerate(parts) if p)
        if self.attributes:
            attrs = "; ".join(f"{k}: {v}" for k, v in sorted(self.attributes.items()) if v)
            text = f"{text.rstrip('.')}. {attrs}" if text else attrs
        return text


class Interaction(Event):
    """A user's interaction with an item, on ``interactions`` (key ``user_id``).

    Parameters
    ----------
    event_id
        Unique id of the event (consumers deduplicate on it).
    kind
        ``impression``, ``click``, ``add_to_cart``, ``purchase`` or ``rating``.
    value
        Required for ``rating`` (a finite number, e.g. 0.5-5 stars); optional otherwise (e.g. a
        purchase amount).
    ts
        When it happened (timezone-aware; stored as UTC).
    decision_id, position
        The exploration decision and slot (0-based) that showed the item, when it was explored.
    """

    event_id: Id
    user_id: Id
    item_id: Id
    kind: InteractionKind
    value: float | None = None
    ts: AwareDatetime
    decision_id: Id | None = None
    position: int | None = Field(default=None, ge=0)

    def count_key(self) -> str:
        """What counts once: an interaction that came from a decision counts once per
        ``(decision_id, item_id)`` and class (impression, engagement = click / add_to_cart / purchase,
        rating), however often it is sent; any other interaction once per ``event_id``."""
        if self.decision_id is None:
            return self.event_id
        cls = self.kind if self.kind in ("impression", "rating") else "engagement"
        return f"{cls}@{self.decision_id}/{self.item_id}"

    @model_validator(mode="after")
    def _value(self) -> Interaction:
        if self.kind == "rating" and self.value is None:
            raise ValueError("kind='rating' needs a value")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"value={self.value!r} must be finite")
        return self


class ItemStored(Event):
    """An item's content row was written to the feature store, on ``items.stored`` (key ``item_id``).

    Processes that keep an in-process pool index (the API) follow this topic to add new items within
    the freshness target without scanning the store. Vectors are float lists (``content_vector``:
    ``(shared_dim,)`` unit norm; ``item_vector``: ``(item_dim,)``).
    """

    item_id: Id
    listed_at: AwareDatetime
    stored_at: AwareDatetime
    encoder_version: str
    image_ok: bool
    text_ok: bool
    category: str = ""
    seller_id: str = ""
    status: Literal["cold", "warming", "warm", "graduated"] = "cold"
    content_vector: list[float]
    item_vector: list[float]


class ItemEvidence(Event):
    """One interaction's evidence about an item, on ``warmup.item_evidence`` (key ``item_id``).

    The user side of a partitioned warm-up (``warmup.layout = "partitioned"``) publishes one per
    interaction of the partitions it owns; the item side that owns the item's partition adds it to the
    item's statistics. ``user_vector`` is the user's warm-up vector just before the event (little-endian
    float64, base64); ``source_partition`` / ``source_offset`` name the interaction, so an item side drops
    evidence re-published by a restarted user side.
    """

    item_id: Id
    event_id: Id
    count_key: str = Field(min_length=1, max_length=4 * _MAX_ID)
    kind: InteractionKind
    weight: float
    positive: bool
    ts: AwareDatetime
    user_vector: str = Field(max_length=1_000_000)
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"weight={value!r} must be finite")
        return value

    @field_validator("user_vector")
    @classmethod
    def _float64s(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"not valid base64 ({exc})") from None
        if not raw or len(raw) % 8:
            raise ValueError(f"{len(raw)} bytes is not a whole number of float64s")
        if not bool(np.isfinite(np.frombuffer(raw, dtype="<f8")).all()):
            raise ValueError("holds a non-finite number")
        return value

    @staticmethod
    def pack(vector: NDArray[np.floating]) -> str:
        """``user_vector`` of a vector."""
        return base64.b64encode(np.asarray(vector, dtype="<f8").tobytes()).decode("ascii")

    def vector(self) -> NDArray[np.float64]:
        """The user's vector before the event."""
        return np.frombuffer(base64.b64decode(self.user_vector), dtype="<f8").astype(np.float64)


class DeadLetter(Event):
    """A record a consumer could not process, on ``<topic>.dlq`` (same key and partition as the source).

    ``payload_b64`` holds the original value bytes, ``key_b64`` the original key, and the source
    coordinates identify the record (consumers of the DLQ may deduplicate on them). A record too large
    to be dead-lettered whole keeps its first 64 KiB, its length and its SHA-256 (``truncated``).

    Parameters
    ----------
    reason
        Human-readable cause, naming the offending field and value when there is one.
    error
        Machine-readable class: ``invalid_json``, ``invalid_event``, ``unsupported_version``,
        ``encode_failed``.
    consumer
        The consumer group that gave up on the record.
    payload_bytes, payload_sha256
        Length and SHA-256 (hex) of the original value.
    truncated
        The letter would not fit the broker's message size: ``payload_b64`` (and ``key_b64``) hold
        only the first :data:`DLQ_KEEP_BYTES` bytes of the original; ``payload_bytes`` and
        ``payload_sha256`` still describe the whole.
    """

    reason: str
    error: str
    consumer: str
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    source_timestamp_ms: int | None = None
    key_b64: str | None = None
    payload_b64: str
    failed_at: AwareDatetime
    payload_bytes: int | None = Field(default=None, ge=0)
    payload_sha256: str | None = None
    truncated: bool = False

    def payload(self) -> bytes:
        """The original record value, byte for byte."""
        return base64.b64decode(self.payload_b64)

    def key(self) -> bytes | None:
        """The original record key, or ``None``."""
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)


E = TypeVar("E", bound=BaseModel)


def encode_event(event: BaseModel) -> bytes:
    """Serialise an event as compact UTF-8 JSON (the wire format)."""
    return event.model_dump_json().encode("utf-8")


class EventDecodeError(InvalidInputError):
    """A record could not be decoded into its contract; ``error`` classifies it for the DLQ."""

    def __init__(self, param: str, value: Any, reason: str, *, error: str) -> None:
        super().__init__(param, value, reason)
        self.error = error


def decode_event(raw: bytes | None, contract: type[E], *, max_bytes: int = MAX_EVENT_BYTES) -> E:
    """Parse wire bytes into ``contract`` (at most ``max_bytes``; any bytes never raise anything else).

    Raises
    ------
    EventDecodeError
        The message names the offending field (dotted path) and its value; ``error`` is
        ``too_large``, ``invalid_json``, ``unsupported_version`` or ``invalid_event``.
    """
    if raw is None:
        raise EventDecodeError("value", None, "empty record (tombstone)", error="invalid_json")
    if len(raw) > max_bytes:
        raise EventDecodeError(
            "value", f"<{len(raw)} bytes>", f"record larger than {max_bytes} bytes", error="too_large"
        )
    try:
        # strict UTF-8 first: json.loads(bytes) would also guess UTF-16/32
        data = json.loads(raw.decode("utf-8"))
    except ValueError as exc:  # bad UTF-8, bad JSON, an integer of over 4300 digits
        raise EventDecodeError("value", raw[:80], f"not UTF-8 JSON ({exc})", error="invalid_json") from None
    except RecursionError:
        raise EventDecodeError("value", raw[:80], "JSON nested too deeply", error="invalid_json") from None
    if not isinstance(data, dict):
        raise EventDecodeError("value", data, "a JSON object is required", error="invalid_json")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise EventDecodeError(
            "schema_version",
            version,
            f"unsupported by this consumer (it reads version {SCHEMA_VERSION})",
            error="unsupported_version",
        )
    try:
        return contract.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or contract.__name__
        extra = f" (and {exc.error_count() - 1} more errors)" if exc.error_count() > 1 else ""
        raise EventDecodeError(
            field, first.get("input"), f"{first['msg']}{extra}", error="invalid_event"
        ) from None


def now_utc() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)
