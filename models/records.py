"""Typed records that cross the models/ boundary (consumed by stream/, exploration/, api/).

Shapes: ``shared_dim`` is the CLIP-style shared image/text space (search); ``item_dim`` is the
recommendation space of the item tower (dot product with user vectors, default 128).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ItemContent:
    """What the encoder sees of one item.

    Parameters
    ----------
    item_id
        The item's id (opaque string).
    text
        The item's text as one string (title, description, category...), possibly empty.
    image
        Encoded image bytes (JPEG, PNG, WebP, ...) or ``None`` when the item has no image.
        Undecodable bytes are not an error: the item degrades to a text-only vector.
    """

    item_id: str
    text: str
    image: bytes | None = None


@dataclass(frozen=True)
class ItemEmbedding:
    """The encoder's output for one item.

    Parameters
    ----------
    content_vector
        Shape ``(shared_dim,)``, float32, unit L2 norm: the item in the shared image/text space.
    item_vector
        Shape ``(item_dim,)``, float32: the item in the recommendation space (item tower output),
        directly comparable (dot product) with user vectors.
    image_ok, text_ok
        Which modalities contributed. At least one is true.
    encoder_version
        Version string of the artifact that produced the vectors (manifest ``version``).
    """

    item_id: str
    content_vector: NDArray[np.float32]
    item_vector: NDArray[np.float32]
    image_ok: bool
    text_ok: bool
    encoder_version: str
