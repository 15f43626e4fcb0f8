"""Typed records stored in and read from the feature store (online and offline)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

ItemStatus = Literal["cold", "warming", "warm", "graduated"]


@dataclass(frozen=True)
class StoredItem:
    """One item's row in the item feature views.

    Parameters
    ----------
    content_vector
        ``(shared_dim,)`` float32, unit norm: shared image/text space (search).
    item_vector
        ``(item_dim,)`` float32: recommendation space (dot product with user vectors); after warm-up
        this is the blended vector, ``content_item_vector`` keeps the frozen content part.
    listed_at, updated_at
        Timezone-aware UTC timestamps; ``updated_at`` is the Feast event timestamp of the row. For
        idempotent re-delivery, derive it from the event (e.g. ``listed_at``), not from the clock.
    model_version
        Version of the warm-up model that produced ``item_vector``/``status`` ("" before warm-up).
    """

    item_id: str
    content_vector: NDArray[np.float32]
    item_vector: NDArray[np.float32]
    image_ok: bool
    text_ok: bool
    encoder_version: str
    listed_at: datetime
    updated_at: datetime
    category: str = ""
    seller_id: str = ""
    status: ItemStatus = "cold"
    impressions: int = 0
    clicks: int = 0
    content_item_vector: NDArray[np.float32] | None = field(default=None)
    model_version: str = ""


@dataclass(frozen=True)
class StoredUser:
    """One user's row: ``vector`` is ``(item_dim,)`` float32 in the recommendation space."""

    user_id: str
    vector: NDArray[np.float32]
    interactions: int
    model_version: str
    updated_at: datetime


class InteractionLike(Protocol):
    """Anything shaped like an interaction event (``coldstart.contracts.Interaction`` is one)."""

    @property
    def event_id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def item_id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def ts(self) -> datetime: ...
    @property
    def decision_id(self) -> str | None: ...
    @property
    def position(self) -> int | None: ...


@dataclass(frozen=True)
class InteractionRecord:
    """One interaction as stored in the offline ``interactions`` table (``ts`` is UTC)."""

    event_id: str
    user_id: str
    item_id: str
    kind: str
    ts: datetime
    value: float | None = None
    decision_id: str | None = None
    position: int | None = None
