"""Configuration of the cold-pool index (``type`` selects the implementation, Feast's pattern)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ExactPoolConfig(BaseModel):
    """In-process exact inner-product index (:class:`~exploration.pool.exact.ExactPool`).

    Parameters
    ----------
    space
        ``item``: the item tower's vectors (recommendation space, compared with user vectors);
        ``content``: the shared image/text space (``GET /v1/search``).
    dim
        Vector dimension; ``None`` fixes it at the first upsert.
    initial_capacity
        Rows allocated up front (the matrix doubles when full).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["exact"] = "exact"
    space: Literal["item", "content"] = "item"
    dim: int | None = Field(default=None, ge=1)
    initial_capacity: int = Field(default=1024, ge=1)


#: Union of the pool configs (one implementation so far; add members with a ``type`` discriminator).
PoolConfig = ExactPoolConfig
