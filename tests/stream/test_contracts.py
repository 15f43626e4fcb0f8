"""Event contracts: validation names the field, JSON round-trips, versions are enforced."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from coldstart.contracts import (
    DeadLetter,
    EventDecodeError,
    ImageRef,
    Interaction,
    ItemListed,
    decode_event,
    encode_event,
)

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def item(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "item_id": "sku-1",
        "title": "Red kettle",
        "description": "1.7 l, stainless steel.",
        "category": "kitchen",
        "attributes": {"brand": "Acme", "colour": "red"},
        "image": {"url": "http://127.0.0.1:8000/k.jpg"},
        "seller_id": "s-9",
        "listed_at": T0.isoformat(),
    }
    base.update(over)
    return base


def test_item_listed_round_trip_and_text() -> None:
    event = decode_event(json.dumps(item()).encode(), ItemListed)
    assert event.schema_version == 1
    assert event.image is not None and event.image.kind == "url"
    assert decode_event(encode_event(event), ItemListed) == event
    assert event.text() == "Red kettle. kitchen. 1.7 l, stainless steel. brand: Acme; colour: red"


def test_listed_at_is_normalised_to_utc() -> None:
    paris = timezone(timedelta(hours=1))
    event = ItemListed.model_validate(item(listed_at=datetime(2026, 1, 2, 4, 4, 5, tzinfo=paris)))
    assert event.listed_at == T0 and event.listed_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("over", "field", "fragment"),
    [
        ({"listed_at": "2026-01-02T03:04:05"}, "listed_at", "timezone"),
        ({"item_id": ""}, "item_id", "at least 1"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
        ({"image": {"url": "http://a/x.jpg", "path": "/x.jpg"}}, "image", "exactly one"),
        ({"image": {}}, "image", "exactly one"),
        ({"image": {"url": "ftp://127.0.0.1/x.jpg"}}, "image.url", "http"),
        ({"image": {"base64": "%%%"}}, "image.base64", "base64"),
        (
            {"title": "", "description": "", "category": "", "attributes": {}, "image": None},
            "ItemListed",
            "neither",
        ),
        ({"seller_id": None}, "seller_id", "string"),
    ],
)
def test_invalid_item_names_the_field(over: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(json.dumps(item(**over)).encode(), ItemListed)
    err = info.value
    assert err.error == "invalid_event"
    assert err.param == field
    assert fragment in str(err)


def test_undecodable_and_versioned_records() -> None:
    with pytest.raises(EventDecodeError) as info:
        decode_event(b"\xff{not json", ItemListed)
    assert info.value.error == "invalid_json" and info.value.param == "value"
    with pytest.raises(EventDecodeError) as info:
        decode_event(b"[1, 2]", ItemListed)
    assert info.value.error == "invalid_json"
    with pytest.raises(EventDecodeError) as info:
        decode_event(json.dumps(item(schema_version=2)).encode(), ItemListed)
    assert info.value.error == "unsupported_version" and info.value.param == "schema_version"
    with pytest.raises(EventDecodeError):
        decode_event(None, ItemListed)


def test_image_ref_kinds() -> None:
    assert ImageRef(path="/tmp/a.jpg").kind == "path"
    assert ImageRef(base64=base64.b64encode(b"abc").decode()).kind == "base64"


def test_interaction_contract() -> None:
    ok = Interaction(
        event_id="e1", user_id="u1", item_id="sku-1", kind="click", ts=T0, decision_id="d1", position=0
    )
    assert decode_event(encode_event(ok), Interaction) == ok
    rating = {"event_id": "e2", "user_id": "u1", "item_id": "i", "kind": "rating", "ts": T0.isoformat()}
    with pytest.raises(EventDecodeError, match="needs a value"):
        decode_event(json.dumps(rating).encode(), Interaction)
    assert decode_event(json.dumps({**rating, "value": 4.5}).encode(), Interaction).value == 4.5
    with pytest.raises(EventDecodeError) as info:
        decode_event(json.dumps({**rating, "kind": "like", "value": 1}).encode(), Interaction)
    assert info.value.param == "kind"
    with pytest.raises(EventDecodeError) as info:
        decode_event(json.dumps({**rating, "value": 1, "position": -1}).encode(), Interaction)
    assert info.value.param == "position"


def test_dead_letter_keeps_the_bytes() -> None:
    raw = b"\x00\xffbinary"
    letter = DeadLetter(
        reason="r",
        error="invalid_json",
        consumer="g",
        source_topic="items.listed",
        source_partition=2,
        source_offset=7,
        key_b64=base64.b64encode(b"k").decode(),
        payload_b64=base64.b64encode(raw).decode(),
        failed_at=T0,
    )
    back = decode_event(encode_event(letter), DeadLetter)
    assert back.payload() == raw and back.key() == b"k"
