"""The benchmarks' HTTP load tools: an open-loop load generator, the baseline servers (the do-nothing
HTTP floor, Feast's own feature server), and the process helpers around them (free ports, CPU and
memory of a process tree, stopping).

Run as a script it is one of the two child processes ``benchmarks/slots.py`` starts::

    python benchmarks/loadgen.py --port P --rate R --duration S --warmup W --users U --k K \
        --connections C --target slots|feast|floor      # one load phase; prints one JSON line
    python benchmarks/loadgen.py --floor-server --port P  # the HTTP floor, until killed

The generator sends requests on a fixed schedule over keep-alive connections and measures each
from its *scheduled* send time, so a server that falls behind is charged for the queueing (no
coordinated omission); ``send_lag_*`` is the generator's own lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

API_KEY = "bench-key"
#: The user read of a slot request: what the Feast baselines fetch.
USER_FEATURES = ["user_vector:user_vector", "user_vector:interactions", "user_vector:model_version"]
_DEVICES = ["mobile", "desktop", "tablet"]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def slot_payload(rng: random.Random, users: int, k: int) -> dict[str, object]:
    """One slot request's body: 90 % known users, a small context."""
    uid = f"user-{rng.randrange(users)}" if rng.random() < 0.9 else f"stranger-{rng.randrange(10**6)}"
    return {"user_id": uid, "k": k, "context": {"device": rng.choice(_DEVICES), "hour": rng.randrange(24)}}


# --------------------------------------------------------------------------- load generator process
async def _loadgen(
    port: int,
    rate: float,
    duration: float,
    warmup: float,
    users: int,
    k: int,
    conns: int,
    target: str = "slots",
) -> dict[str, Any]:
    rng = random.Random(7)

    def body() -> bytes:
        payload = slot_payload(rng, users, k)
        path = "/v1/exploration/slots"
        if target == "feast":  # Feast's feature server: the same user read the slot service makes
            path = "/get-online-features"
            payload = {
                "features": USER_FEATURES,
                "entities": {"user_id": [payload["user_id"]]},
                "full_feature_names": True,
            }
        raw = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {API_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
        ).encode()
        return head + raw

    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(conns):
        idle.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    lat: list[float] = []
    lag: list[float] = []  # scheduled time -> the request written (the generator's own lateness)
    errors = 0
    done_times: list[float] = []

    async def one(scheduled: float, record: bool) -> None:
        nonlocal errors
        reader, writer = await idle.get()
        try:
            payload = body()
            sent = time.perf_counter()
            writer.write(payload)
            await writer.drain()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            end = time.perf_counter()
            if record:
                if not status_line.startswith(b"HTTP/1.1 200"):
                    errors += 1
                lat.append((end - scheduled) * 1e3)
                lag.append((sent - scheduled) * 1e3)
                done_times.append(end)
        finally:
            idle.put_nowait((reader, writer))

    tasks = []
    total = int((warmup + duration) * rate)
    t0 = time.perf_counter() + 0.1
    measure_from = t0 + warmup
    for i in range(total):
        scheduled = t0 + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled, scheduled >= measure_from)))
    await asyncio.gather(*tasks)
    span = (max(done_times) - measure_from) if done_times else float("nan")
    return {
        "latencies_ms": lat,
        "lags_ms": lag,
        "errors": errors,
        "achieved_rps": len(lat) / span if span > 0 else 0.0,
        "sent": total,
    }


def loadgen_main(args: argparse.Namespace) -> None:
    # deferred import: uvloop
    import uvloop

    start = resource.getrusage(resource.RUSAGE_SELF)
    out = uvloop.run(
        _loadgen(
            args.port,
            args.rate,
            args.duration,
            args.warmup,
            args.users,
            args.k,
            args.connections,
            args.target,
        )
    )
    lat = out["latencies_ms"]
    lag = out["lags_ms"]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "n": len(lat),
                "errors": out["errors"],
                "p50_ms": pct(lat, 50),
                "p90_ms": pct(lat, 90),
                "p99_ms": pct(lat, 99),
                "max_ms": max(lat) if lat else float("nan"),
                "send_lag_p50_ms": pct(lag, 50),
                "send_lag_p99_ms": pct(lag, 99),
                "achieved_rps": out["achieved_rps"],
                "sent": out["sent"],
                "cpu_s": usage.ru_utime + usage.ru_stime - start.ru_utime - start.ru_stime,
            }
        )
    )


# --------------------------------------------------------------------------- the HTTP floor
#: What the floor server answers to every request: a 200 with a body the size of a slots response.
_FLOOR_BODY = json.dumps(
    {
        "decision_id": "0" * 32,
        "model_version": "floor",
        "slots": [
            {"item_id": f"item-{i:05d}", "position": i, "propensity": 0.2, "score": 0.5} for i in range(5)
        ],
    }
).encode()
_FLOOR_RESPONSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(_FLOOR_BODY)).encode()
    + b"\r\n\r\n"
    + _FLOOR_BODY
)


class _FloorProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive server that does nothing: each complete request (head + ``Content-Length``
    bytes of body) gets :data:`_FLOOR_RESPONSE`. The least any Python HTTP endpoint can cost here."""

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while True:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            for line in self._buf[:end].split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self._buf) < end + 4 + length:
                return
            self._buf = self._buf[end + 4 + length :]
            assert self._transport is not None
            self._transport.write(_FLOOR_RESPONSE)


def floor_server_main(port: int) -> None:
    """Serve :class:`_FloorProtocol` on ``127.0.0.1:port`` (uvloop, one process) until killed."""
    # deferred import: uvloop
    import uvloop

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(_FloorProtocol, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    uvloop.run(run())


def start_floor_server(port: int) -> subprocess.Popen[bytes]:
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        [sys.executable, __file__, "--floor-server", "--port", str(port)]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"floor server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("floor server not ready in time")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(roots: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process tree (the API: master, workers and
    their decision-log producers; the broker). The API's tree is also split into ``api_workers``
    (master + uvicorn workers) and ``api_decision_log`` (the workers' producer processes)."""

    out: dict[str, float] = {}
    for name, pid in roots.items():
        if pid is None:
            continue
        total = 0.0
        deep = 0.0
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                t = proc.cpu_times()
                total += t.user + t.system
                if proc.pid != pid and proc.ppid() != pid:
                    deep += t.user + t.system
        except psutil.Error:
            pass
        out[name] = total
        if name == "api":
            out["api_workers"] = total - deep
            out["api_decision_log"] = deep
    return out


def connections_per_worker(api_pid: int, port: int) -> list[int]:
    """Established client connections held by each process of the API (busiest first)."""

    counts: list[int] = []
    for proc in psutil.Process(api_pid).children(recursive=True):
        try:
            n = sum(
                1
                for c in proc.net_connections(kind="tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )
        except psutil.Error:
            continue
        if n:
            counts.append(n)
    return sorted(counts, reverse=True)


def rss_mb(api_pid: int) -> dict[str, Any]:
    """Resident memory of the API's process tree (master, workers, decision-log producers), MB."""

    procs = []
    try:
        root = psutil.Process(api_pid)
        for proc in [root, *root.children(recursive=True)]:
            procs.append(round(proc.memory_info().rss / 2**20, 1))
    except psutil.Error:
        pass
    return {"total": round(sum(procs), 1), "processes": sorted(procs, reverse=True)}


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_feature_server(data_dir: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """Feast's own HTTP feature server (``feast serve``: gunicorn + uvicorn workers) over the same
    embedded store; returns once its ``/health`` answers."""
    # deferred: Feast (through the store's repo config) costs seconds at import, and the load
    # generator, which runs as this module, must start fast
    import httpx
    import yaml

    # deferred import: Feast
    from coldstart.settings import get_settings
    from feature_repo.config import EmbeddedStoreConfig
    from feature_repo.opening import repo_config

    settings = get_settings(data_dir=data_dir)
    repo = repo_config(settings.feast, data_dir)  # the config open_store() built the store from
    assert isinstance(settings.feast, EmbeddedStoreConfig), (
        "the Feast HTTP baseline serves the embedded store"
    )
    root = Path(repo.repo_path or settings.feast.embedded_root(data_dir))
    # `feast -c ROOT` sets repo_path itself
    config = repo.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"repo_path"})
    (root / "feature_store.yaml").write_text(yaml.safe_dump(config))
    feast = str(Path(sys.executable).with_name("feast"))
    proc: subprocess.Popen[bytes] = subprocess.Popen(
        [feast, "-c", str(root), "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--no-access-log", "--max-requests", "0",
         "--keep-alive-timeout", "120"],
        cwd=root, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"feast serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                time.sleep(3.0)  # every worker up
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError("feast serve not ready in time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--floor-server", action="store_true")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=float, default=300.0)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--target", choices=["slots", "feast", "floor"], default="slots")
    args = ap.parse_args()
    if args.floor_server:
        floor_server_main(args.port)
    else:
        loadgen_main(args)


if __name__ == "__main__":
    main()
