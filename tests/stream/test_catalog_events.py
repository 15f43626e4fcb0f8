"""A catalog on disk as new-item events (the demo's and the replay's listings): every image mode, the
limit, and the refusal of a URL mode without a URL function."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from coldstart.contracts import ItemListed
from coldstart.errors import InvalidInputError
from stream.catalog_events import catalog_events
from tests.models.test_catalog import INTER, ITEMS, _jpeg, _write


def test_each_image_mode_names_the_same_image(tmp_path: Path) -> None:
    root = _write(tmp_path / "cat", ITEMS, INTER)
    by_path = list(catalog_events(root, image_mode="path", seller_id="s1"))
    assert [e.item_id for e in by_path] == ["a", "b", "c"]
    assert all(isinstance(e, ItemListed) and e.seller_id == "s1" for e in by_path)
    a = by_path[0]
    assert a.title == "Red jacket" and a.category == "Outerwear" and a.image is not None
    assert a.image.path == str((root / "img" / "a.jpg").absolute())
    assert by_path[1].image is None  # no image in the catalog: none in the event
    inline = list(catalog_events(root, image_mode="base64", limit=1))
    assert len(inline) == 1 and inline[0].image is not None
    assert base64.b64decode(inline[0].image.base64 or "") == _jpeg()
    urls = list(catalog_events(root, image_mode="url", image_url=lambda p: f"http://127.0.0.1:1/{p.name}"))
    assert urls[0].image is not None and urls[0].image.url == "http://127.0.0.1:1/a.jpg"
    with pytest.raises(InvalidInputError):
        list(catalog_events(root, image_mode="url"))
