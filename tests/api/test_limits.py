"""Request limits before work: body size (declared and streamed), auth before the body, strict and
bounded request schemas, and hostile strings answered 422, never 500."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.api.conftest import KEY, seeded_settings

SLOTS = "/v1/exploration/slots"


@pytest.fixture(params=[True, False], ids=["direct", "fastapi"])
def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """The app with the direct slot path on and off (both must enforce the same limits)."""
    settings = seeded_settings(
        tmp_path, api={"api_keys": ["test-key"], "connect_kafka": False, "direct_routes": request.param}
    )
    with TestClient(create_app(settings)) as c:
        yield c


def _chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    yield b'{"user_id": "u", "k": 1, "context": {"pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}}'


def test_oversized_bodies_get_413(any_client: TestClient) -> None:
    big = json.dumps({"user_id": "u", "k": 1, "context": {"pad": "x" * (50 * 1024 * 1024)}})
    r = any_client.post(SLOTS, content=big, headers={**KEY, "content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    # no Content-Length: the limit holds while the body streams in
    r = any_client.post(
        SLOTS, content=_chunks(2 * 1024 * 1024), headers={**KEY, "content-type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    # just under the limit is parsed (and rejected for its context value's length, not its size)
    r = any_client.post(
        SLOTS, content=_chunks(900 * 1024), headers={**KEY, "content-type": "application/json"}
    )
    assert r.status_code == 422
    for path in ("/v1/items", "/v1/interactions", "/v1/search/image"):
        r = any_client.post(path, content=big, headers={**KEY, "content-type": "application/json"})
        assert r.status_code == 413, path


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, int]:
    """Drive the ASGI app directly: (status, body, how many times the app asked for the body)."""
    asked = 0
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": b"{" * 1024, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "root_path": "",
    }
    asyncio.run(app(scope, receive, send))
    return int(out["status"]), bytes(out["body"]), asked


def test_unauthenticated_and_declared_oversize_bodies_are_never_read(tmp_path: Path) -> None:
    settings = seeded_settings(tmp_path)
    app = create_app(settings)
    with TestClient(app):  # runs the lifespan: the state exists
        fifty_mb = [(b"content-type", b"application/json"), (b"content-length", str(50 << 20).encode())]
        for path in (SLOTS, "/v1/items", "/v1/interactions"):
            status, body, asked = _call(app, path, fifty_mb)
            assert (status, asked) == (401, 0), path
            assert json.loads(body)["error"] == "unauthorized"
            status, body, asked = _call(app, path, [*fifty_mb, (b"x-api-key", b"wrong")])
            assert (status, asked) == (401, 0), path
            status, body, asked = _call(app, path, [*fifty_mb, (b"x-api-key", b"test-key")])
            assert (status, asked) == (413, 0), path
            assert json.loads(body)["error"] == "too_large"


@pytest.mark.parametrize(
    "body",
    [
        b'{"user_id": "\\ud800", "k": 1}',  # a lone surrogate
        b'{"user_id": "a\\u0000b", "k": 1}',  # NUL
        b'{"user_id": "a\\nb", "k": 1}',
        b'{"user_id": "u", "k": 1, "exclude_item_ids": ["\\udfff"]}',
        b'{"user_id": "u", "k": 1, "context": {"\\u0007": 1}}',
        b'{"user_id": "u", "k": "5"}',
        b'{"user_id": "u", "k": 5.0}',
        b'{"user_id": "u", "k": true}',
        b'{"user_id": "u", "k": 1, "context": {"x": "' + b"y" * 2000 + b'"}}',
        b'{"user_id": "' + b"u" * 257 + b'", "k": 1}',
        b"\xff\xfe",
    ],
)
def test_hostile_slot_requests_are_422(any_client: TestClient, body: bytes) -> None:
    r = any_client.post(SLOTS, content=body, headers={**KEY, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid_input"


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "u", "item_id": "i", "kind": "click", "position": False},
        {"user_id": "u", "item_id": "i", "kind": "click", "position": "1"},
        {"user_id": "u", "item_id": "i", "kind": "click", "position": 1.0},
        {"user_id": "u\x00", "item_id": "i", "kind": "click"},
        {"user_id": "u", "item_id": "i", "kind": "rating"},
        {"user_id": "u", "item_id": "i", "kind": "rating", "value": "4"},
    ],
)
def test_strict_interactions(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/v1/interactions", json=body, headers=KEY)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize(
    "item",
    [
        {"item_id": "a", "title": " ", "seller_id": "s"},  # neither text nor image
        {"item_id": "a", "title": "t", "seller_id": "s", "attributes": {f"k{i}": "v" for i in range(100)}},
        {"item_id": "a", "title": "t", "seller_id": "s", "attributes": {"k": "v" * 2000}},
        {"item_id": "a", "title": "t", "seller_id": "s", "image": {"url": "ftp://x/y.jpg"}},
        {"item_id": "a", "title": "t", "seller_id": "s", "image": {"base64": "abc"}},
        {"item_id": "a", "title": "t", "seller_id": "s", "image": {}},
        {"item_id": "a\x1f", "title": "t", "seller_id": "s"},
    ],
)
def test_item_rules_are_enforced(client: TestClient, item: dict[str, Any]) -> None:
    r = client.post("/v1/items", json=item, headers=KEY)
    assert r.status_code == 422, r.text


def _strings(schema: Any, defs: dict[str, Any], path: str, seen: set[str]) -> Iterator[tuple[str, Any]]:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if ref:
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                yield from _strings(defs[name], defs, f"{path}->{name}", seen | {name})
            return
        if schema.get("type") == "string":
            yield path, schema
        for key, sub in schema.items():
            if key in ("properties", "$defs"):
                for name, prop in sub.items():
                    yield from _strings(prop, defs, f"{path}.{name}", seen)
            elif key in ("items", "additionalProperties", "propertyNames"):
                yield from _strings(sub, defs, f"{path}[]", seen)
            elif key in ("anyOf", "oneOf", "allOf"):
                for s in sub:
                    yield from _strings(s, defs, path, seen)


def test_every_request_string_is_bounded_in_the_openapi_schema(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    defs = spec["components"]["schemas"]
    found = 0
    for route, ops in spec["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            params = [p["schema"] for p in op.get("parameters", [])]
            for schema in [body, *params]:
                for where, s in _strings(schema or {}, defs, f"{method} {route}", set()):
                    if "enum" in s or "const" in s or s.get("format") == "date-time":
                        continue
                    found += 1
                    assert "maxLength" in s, where
    assert found > 20


def test_search_image_url_never_reaches_internal_ports_nor_tells_what_answered(client: TestClient) -> None:
    from tests.stream.test_egress import CountingListener

    listener = CountingListener()
    try:
        answers = set()
        for url in (
            f"http://127.0.0.1:{listener.port}/a.jpg",
            f"http://localhost:{listener.port}/a.jpg",
            "http://127.0.0.1:1/a.jpg",  # nothing listens: "connection refused" must not show
            "http://169.254.169.254/latest/meta-data",
        ):
            r = client.get("/v1/search", params={"image_url": url}, headers=KEY)
            assert r.status_code == 422, r.text
            answers.add(r.json()["message"].replace(url, "URL").replace(repr(url), "URL"))
        assert listener.accepted == 0
        assert len(answers) == 1 and "image could not be fetched" in answers.pop()
    finally:
        listener.close()
