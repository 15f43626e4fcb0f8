"""``coldstart api serve`` with several workers: connections are handed out round-robin by the parent,
a killed worker is replaced, SIGTERM stops everything (real processes over loopback)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.api.conftest import seeded_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEADERS = {"X-API-Key": "test-key", "Content-Type": "application/json"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _workers(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The uvicorn workers: the server's direct children that are not multiprocessing helpers."""
    return [c for c in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(c.cmdline())]


def _held(worker: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in worker.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


def _wait(pred: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _slots(conn: http.client.HTTPConnection, user: str) -> int:
    conn.request("POST", "/v1/exploration/slots", json.dumps({"user_id": user, "k": 3}), HEADERS)
    resp = conn.getresponse()
    body = json.loads(resp.read())
    if resp.status == 200:
        assert len(body["slots"]) == 3
    return resp.status


def _ready(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/readyz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _both_serving(proc: subprocess.Popen[bytes], port: int) -> bool:
    """Two fresh connections land on two different workers (a worker gets connections once its app
    has started)."""
    pair = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(2)]
    try:
        for c in pair:
            c.connect()
            c.request("GET", "/healthz")
            c.getresponse().read()
        return sorted(_held(w, port) for w in _workers(proc)) == [1, 1]
    finally:
        for c in pair:
            c.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    seeded_settings(tmp_path, n_items=60)
    port = _free_port()
    env = dict(os.environ)
    env.update(
        {
            "COLDSTART_DATA_DIR": str(tmp_path),
            "COLDSTART_FEAST__TYPE": "embedded",
            "COLDSTART_API__API_KEYS": '["test-key"]',
            "COLDSTART_API__CONNECT_KAFKA": "false",
            "COLDSTART_API__SEARCH_INDEX": "false",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "api", "serve", "--port", str(port), "--workers", "2",
         "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        _wait(lambda: proc.poll() is not None or _ready(port), 120, "the API")
        assert proc.poll() is None, "server exited"
        _wait(lambda: len(_workers(proc)) == 2, 30, "two workers")
        _wait(lambda: _both_serving(proc, port), 120, "both workers serving")
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.timeout(240)
def test_connections_are_spread_evenly_and_a_killed_worker_is_replaced(
    server: tuple[subprocess.Popen[bytes], int],
) -> None:
    proc, port = server
    # a burst of keep-alive connections, opened together (uvicorn's shared socket gives one worker most)
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(8)]
    for c in conns:
        c.connect()
    for n, c in enumerate(conns):
        assert _slots(c, f"user-{n % 3}") == 200
    workers = _workers(proc)
    held = sorted(_held(w, port) for w in workers)
    assert held == [4, 4], held

    victim = workers[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    _wait(
        lambda: len(_workers(proc)) == 2 and victim.pid not in {w.pid for w in _workers(proc)},
        30,
        "a replacement worker",
    )
    # the survivors' connections still work; new connections all get served once the new worker is up
    survivors = [c for c in conns if c.sock is not None]
    ok = 0
    for c in survivors:
        with contextlib.suppress(OSError, http.client.HTTPException):  # held by the killed worker
            ok += _slots(c, "user-0") == 200
    assert ok == 4
    _wait(lambda: _both_serving(proc, port), 120, "the replacement serving")
    fresh = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(6)]
    for c in fresh:
        c.connect()
    statuses = [_slots(c, "user-1") for c in fresh]
    assert statuses == [200] * 6
    new_worker = next(w for w in _workers(proc) if w.pid != workers[1].pid)
    assert _held(new_worker, port) == 3

    for c in conns + fresh:
        c.close()
    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    _gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, COLDSTART_DATA_DIR=str(tmp_path), COLDSTART_API__CONNECT_KAFKA="false")
        out = subprocess.run(
            [sys.executable, "-m", "cli.main", "api", "serve", "--port", str(port), "--workers", "2"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
