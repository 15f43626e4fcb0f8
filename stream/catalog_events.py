"""New-item events from a catalog on disk (the demo's and the replay's source of listings).

A catalog in the generic layout (``models.catalog``: ``items.csv`` + images) becomes
:class:`~coldstart.contracts.ItemListed` events, with each image as a path, inline base64 bytes, or a URL
(e.g. a loopback image server).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from coldstart.contracts import ImageRef, ItemListed, now_utc
from coldstart.errors import InvalidInputError
from models.catalog import Catalog

ImageMode = Literal["path", "base64", "url"]


def catalog_events(
    catalog_dir: Path,
    *,
    limit: int | None = None,
    image_mode: ImageMode = "path",
    image_url: Callable[[Path], str] | None = None,
    seller_id: str = "catalog",
    listed_at: Callable[[], datetime] = now_utc,
) -> Iterator[ItemListed]:
    """ItemListed events for the items of a catalog in the generic layout (``models.catalog``).

    Parameters
    ----------
    image_mode
        ``path``: the absolute image path; ``base64``: the bytes inline; ``url``: ``image_url(path)``
        (e.g. a loopback HTTP server that serves the catalog's images).
    listed_at
        Called once per event (default: now), so freshness can be measured from it.
    """
    catalog = Catalog.load(catalog_dir, check_images=False)
    if image_mode == "url" and image_url is None:
        raise InvalidInputError("image_url", None, "image_mode='url' needs an image_url function")
    items: Iterable[Any] = catalog.items if limit is None else catalog.items[:limit]
    for item in items:
        image: ImageRef | None = None
        if item.image_path is not None:
            path = Path(item.image_path)
            if image_mode == "path":
                image = ImageRef(path=os.fspath(path.absolute()))
            elif image_mode == "base64":
                data = item.read_image()
                image = None if data is None else ImageRef(base64=base64.b64encode(data).decode("ascii"))
            else:
                assert image_url is not None
                image = ImageRef(url=image_url(path))
        yield ItemListed(
            item_id=item.item_id,
            title=item.title,
            description=item.text,
            category=item.category,
            image=image,
            seller_id=seller_id,
            listed_at=listed_at(),
        )
