"""The direct path of POST /v1/exploration/slots (api.direct): well-formed, authorised requests are
served without FastAPI's machinery, everything else gets exactly FastAPI's answer."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.direct import DirectRoutes
from api.main import DIRECT_ROUTES, create_app
from tests.api.conftest import KEY, seeded_settings

SLOTS = "/v1/exploration/slots"


def _direct(app: FastAPI) -> DirectRoutes:
    layer: Any = app.middleware_stack
    while layer is not None and not isinstance(layer, DirectRoutes):
        layer = getattr(layer, "app", None)
    assert isinstance(layer, DirectRoutes), "DirectRoutes is not in the middleware stack"
    return layer


@pytest.fixture
def apps(tmp_path: Path) -> Iterator[tuple[tuple[FastAPI, TestClient], tuple[FastAPI, TestClient]]]:
    """The same seeded store served twice: with the direct path and without it."""
    on = create_app(seeded_settings(tmp_path / "on"))
    off = create_app(
        seeded_settings(
            tmp_path / "off", api={"api_keys": ["test-key"], "connect_kafka": False, "direct_routes": False}
        )
    )
    with TestClient(on) as c_on, TestClient(off) as c_off:
        yield (on, c_on), (off, c_off)


def test_every_direct_route_is_a_fastapi_route() -> None:
    """The direct path only serves what FastAPI also serves: the route documented in OpenAPI, the
    same request model, the fallback for everything the direct path declines."""
    paths = create_app().openapi()["paths"]
    assert DIRECT_ROUTES
    for route in DIRECT_ROUTES:
        op = paths[route.path][route.method.lower()]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[-1] == route.model.__name__


def test_a_good_request_is_served_directly_and_timed(apps) -> None:  # type: ignore[no-untyped-def]
    (on, c_on), (off, c_off) = apps
    body = {"user_id": "user-0", "k": 3, "context": {"device": "mobile", "hour": 21, "new": True}}
    r_on, r_off = c_on.post(SLOTS, json=body, headers=KEY), c_off.post(SLOTS, json=body, headers=KEY)
    assert r_on.status_code == r_off.status_code == 200
    assert r_on.headers["content-type"] == r_off.headers["content-type"] == "application/json"
    a, b = r_on.json(), r_off.json()
    assert a.keys() == b.keys() == {"decision_id", "model_version", "slots"}
    assert len(a["slots"]) == len(b["slots"]) == 3
    assert [s.keys() for s in a["slots"]] == [s.keys() for s in b["slots"]]
    assert _direct(on).served == 1 and _direct(off).served == 0
    # the decision was made and counted like any other
    assert on.state.coldstart.service.decisions == 1
    metrics = c_on.get("/metrics", headers=KEY).text
    labels = 'method="POST",route="/v1/exploration/slots",status="200"'
    assert f"coldstart_http_request_duration_seconds_count{{{labels}}} 1.0" in metrics
    assert 'coldstart_exploration_decisions_total{user="known"} 1.0' in metrics


BAD: list[tuple[str, dict[str, str], bytes]] = [
    ("no key", {"content-type": "application/json"}, b'{"user_id": "u", "k": 3}'),
    ("wrong key", {"x-api-key": "nope", "content-type": "application/json"}, b'{"user_id": "u", "k": 3}'),
    ("k out of range", {**KEY, "content-type": "application/json"}, b'{"user_id": "u", "k": 51}'),
    ("k missing", {**KEY, "content-type": "application/json"}, b'{"user_id": "u"}'),
    ("unknown field", {**KEY, "content-type": "application/json"}, b'{"user_id": "u", "k": 1, "kk": 2}'),
    (
        "bad filter",
        {**KEY, "content-type": "application/json"},
        b'{"user_id": "u", "k": 1, "filters": {"seller": [""]}}',
    ),
    ("malformed JSON", {**KEY, "content-type": "application/json"}, b'{"user_id": "u", "k": '),
    ("not JSON", {**KEY, "content-type": "text/plain"}, b"user_id=u&k=3"),
    ("empty user", {**KEY, "content-type": "application/json"}, b'{"user_id": "", "k": 3}'),
]


@pytest.mark.parametrize(("case", "headers", "raw"), BAD, ids=[b[0] for b in BAD])
def test_every_error_is_fastapis_own_answer(apps, case: str, headers: dict[str, str], raw: bytes) -> None:  # type: ignore[no-untyped-def]
    (on, c_on), (_, c_off) = apps
    r_on = c_on.post(SLOTS, content=raw, headers=headers)
    r_off = c_off.post(SLOTS, content=raw, headers=headers)
    assert 400 <= r_on.status_code < 500, (case, r_on.text)
    assert (r_on.status_code, r_on.json()) == (r_off.status_code, r_off.json())
    assert r_on.headers.get("www-authenticate") == r_off.headers.get("www-authenticate")
    assert _direct(on).served == 0  # all of them went to FastAPI
    assert on.state.coldstart.service.decisions == 0


def test_a_user_store_failure_degrades_on_both_paths(apps) -> None:  # type: ignore[no-untyped-def]
    """A failing user read is served as for an unknown user, flagged ``degraded``, on both paths."""
    answers = []
    for app, client in apps:
        store = app.state.coldstart.store
        with sqlite3.connect(store.feast.config.online_store.path) as db:
            tables = [t for (t,) in db.execute("select name from sqlite_master where type='table'")]
            for t in tables:
                if "user" in t:
                    db.execute(f'drop table "{t}"')
        r = client.post(SLOTS, json={"user_id": "user-0", "k": 2}, headers=KEY)
        answers.append((r.status_code, r.json().get("degraded"), len(r.json()["slots"])))
    assert answers[0] == answers[1] == (200, "user_store_unavailable", 2)
    assert _direct(apps[0][0]).served == 1


def test_a_handler_error_gets_the_same_answer_on_both_paths(apps) -> None:  # type: ignore[no-untyped-def]
    """An error raised by the handler (after validation) gets the response api/errors.py gives it:
    here a policy whose pmf is not a distribution (a corrupt model)."""
    answers = []
    for app, client in apps:
        policy = app.state.coldstart.holder.current.policy
        policy._predict = lambda context, arms: (np.full(len(arms), np.nan), np.zeros(len(arms)))
        r = client.post(SLOTS, json={"user_id": "user-0", "k": 2}, headers=KEY)
        answers.append((r.status_code, r.headers.get("retry-after"), r.json()["error"]))
    assert answers[0] == answers[1] == (503, "5", "unavailable")
    assert _direct(apps[0][0]).served == 1


def test_the_first_of_repeated_headers_counts_on_both_paths(apps) -> None:  # type: ignore[no-untyped-def]
    (on, c_on), (_, c_off) = apps
    body = b'{"user_id": "user-1", "k": 2}'
    for keys, status in ((["test-key", "nope"], 200), (["nope", "test-key"], 401)):
        headers = [("content-type", "application/json"), *(("x-api-key", k) for k in keys)]
        r_on, r_off = (
            c_on.post(SLOTS, content=body, headers=headers),
            c_off.post(SLOTS, content=body, headers=headers),
        )
        assert r_on.status_code == r_off.status_code == status, keys
    assert _direct(on).served == 1
