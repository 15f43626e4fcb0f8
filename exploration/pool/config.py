"""Configuration of the cold-pool index (``type`` selects the implementation, Feast's pattern)."""

from __future__ import annotations

from typing import Annotated, Literal

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


class HnswPoolConfig(BaseModel):
    """Approximate index: FAISS HNSW graphs partitioned by category and seller
    (:class:`~exploration.pool.hnsw.HnswPool`). Exact stays the default: below ``graph_min`` items
    every part is searched exactly anyway, and exact is faster there (docs/results/pool.md).

    ``storage``: how the graphs hold vectors (``sq8``: one byte per dimension, a quarter of the memory
    traffic of ``flat`` float32); either way a search takes ``rerank_factor × k`` candidates from the
    graph and orders them by their exact scores.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["hnsw"] = "hnsw"
    space: Literal["item", "content"] = "item"
    dim: int | None = Field(default=None, ge=1)
    m: int = Field(default=32, ge=4, le=128)
    ef_construction: int = Field(default=160, ge=1)
    ef_add: int = Field(default=64, ge=1)
    ef_search: int = Field(default=256, ge=1)
    graph_min: int = Field(default=20_000, ge=1)
    rebuild_ratio: float = Field(default=0.25, gt=0, le=1)
    storage: Literal["flat", "sq8"] = "sq8"
    rerank_factor: float = Field(default=1.5, ge=1, le=10)


#: Union of the pool configs, told apart by ``type``.
PoolConfig = Annotated[ExactPoolConfig | HnswPoolConfig, Field(discriminator="type")]
