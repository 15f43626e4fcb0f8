"""Image fetching against a real loopback HTTP server: posters, 404, wrong type, oversize, timeout."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from coldstart.contracts import ImageRef
from stream.config import ImageFetchSettings
from stream.egress_policy import EgressPolicy
from stream.image_server import ImageServer
from stream.images import ImageFetcher
from tests.stream.conftest import POSTERS, poster_paths

pytestmark = pytest.mark.integration

CAP = 64 * 1024


class _Faulty(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/html":
            body = b"<html>not an image</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(CAP * 4))
            self.end_headers()
            self.wfile.write(b"\xff" * CAP * 4)
        elif self.path == "/big-chunked":  # no Content-Length: the cap must hold while streaming
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(16):
                self.wfile.write(b"\xff" * (CAP // 4))
        elif self.path == "/slow":
            time.sleep(1.5)
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def faulty() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Faulty)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _fetcher(timeout_s: float) -> ImageFetcher:
    return ImageFetcher(
        ImageFetchSettings(
            timeout_s=timeout_s,
            max_bytes=CAP,
            concurrency=4,
            path_roots=[POSTERS],
            egress=EgressPolicy(allow_hosts=["127.0.0.1"]),  # the test's own loopback servers
        )
    )


@pytest.fixture
def fetcher(tmp_path: Path) -> Iterator[ImageFetcher]:
    f = _fetcher(0.5)
    yield f
    f.close()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_real_posters_over_http(process: bool) -> None:
    # not the 0.5 s fixture: a just-spawned server process on a busy 2-core machine (CI) can take
    # longer than that to answer its first connections, and this test is about the bytes, not timing
    fetcher = _fetcher(10.0)
    posters = poster_paths(6)
    try:
        with ImageServer(POSTERS, process=process) as server:
            results = fetcher.fetch_many([ImageRef(url=server.url(p)) for p in posters * 3])
            missing = fetcher.fetch_many([ImageRef(url=f"{server.base_url}/no-such-poster.jpg")])
    finally:
        fetcher.close()
    assert [r.error for r in results] == [None] * 18
    assert [r.data for r in results] == [p.read_bytes() for p in posters * 3]
    assert missing[0].error is not None and missing[0].data is None


def test_the_image_server_keeps_connections_alive() -> None:
    import http.client

    posters = poster_paths(3)
    with ImageServer(POSTERS) as server:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.base_url.rsplit(":", 1)[1]))
        bodies = []
        for p in posters:  # three requests on one connection
            conn.request("GET", server.url(p).split(server.base_url, 1)[1])
            resp = conn.getresponse()
            assert resp.status == 200 and not resp.will_close
            bodies.append(resp.read())
        conn.close()
    assert bodies == [p.read_bytes() for p in posters]


def test_http_failures_are_classified(fetcher: ImageFetcher, faulty: str) -> None:
    refs = [
        ImageRef(url=f"{faulty}/{p}") for p in ("missing.jpg", "html", "big-declared", "big-chunked", "slow")
    ]
    start = time.monotonic()
    results = fetcher.fetch_many(refs)
    assert time.monotonic() - start < 1.4  # the slow one is cut at the 0.5 s deadline, concurrently
    assert [r.error for r in results] == ["http_status", "content_type", "too_large", "too_large", "timeout"]
    assert all(r.data is None for r in results)
    assert "404" in results[0].detail and "text/html" in results[1].detail


def test_connection_refused_is_a_network_error(fetcher: ImageFetcher) -> None:
    from stream.broker import free_port

    result = fetcher.fetch(ImageRef(url=f"http://127.0.0.1:{free_port()}/x.jpg"))
    assert result.error == "network" and result.data is None


def test_paths_and_base64(fetcher: ImageFetcher, tmp_path: Path) -> None:
    poster = poster_paths(1)[0]
    assert fetcher.fetch(ImageRef(path=str(poster))).data == poster.read_bytes()
    assert fetcher.fetch(ImageRef(path=str(POSTERS / "no-such.jpg"))).error == "not_found"
    outside = tmp_path / "x.jpg"
    outside.write_bytes(poster.read_bytes())
    assert fetcher.fetch(ImageRef(path=str(outside))).error == "forbidden_path"
    assert (
        fetcher.fetch(ImageRef(path=str(POSTERS / ".." / "ml-1m_meta" / "movies.dat"))).error
        == "forbidden_path"
    )
    inline = base64.b64encode(poster.read_bytes()).decode()
    assert fetcher.fetch(ImageRef(base64=inline)).data == poster.read_bytes()
    huge = base64.b64encode(b"\x00" * (CAP * 2)).decode()
    assert fetcher.fetch(ImageRef(base64=huge)).error == "too_large"
    assert fetcher.fetch(None).data is None
