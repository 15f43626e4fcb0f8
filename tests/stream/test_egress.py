"""Outbound fetches are safe by default: an internal listener gets no connection from event URLs,
redirects or DNS names that resolve to it, unless its host:port is allowlisted."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coldstart.contracts import ImageRef
from stream.config import ImageFetchSettings
from stream.egress_policy import EgressPolicy
from stream.images import ImageFetcher

pytestmark = pytest.mark.integration


class CountingListener:
    """A loopback TCP listener that counts the connections it accepts (and closes them)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[CountingListener]:
    lst = CountingListener()
    yield lst
    lst.close()


def _redirector(target: str) -> tuple[ThreadingHTTPServer, str]:
    class _Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hops = self.path.count("/hop")
            self.send_response(302)
            self.send_header(
                "Location", f"{base}/hop{self.path}" if hops < 5 and "loop" in self.path else target
            )
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    return server, base


def _fetcher(allow: list[str]) -> ImageFetcher:
    return ImageFetcher(ImageFetchSettings(timeout_s=1.0, egress=EgressPolicy(allow_hosts=allow)))


def test_internal_addresses_get_no_connection(listener: CountingListener) -> None:
    p = listener.port
    urls = [
        f"http://127.0.0.1:{p}/a.jpg",
        f"http://localhost:{p}/a.jpg",
        f"http://LOCALHOST.:{p}/a.jpg",
        f"http://2130706433:{p}/a.jpg",  # 127.0.0.1 as one number
        f"http://0x7f.0.0.1:{p}/a.jpg",
        f"http://127.1:{p}/a.jpg",
        f"http://[::ffff:127.0.0.1]:{p}/a.jpg",
        f"https://127.0.0.1:{p}/a.jpg",
    ]
    fetcher = _fetcher([])
    try:
        results = fetcher.fetch_many([ImageRef(url=u) for u in urls])
    finally:
        fetcher.close()
    assert all(r.data is None for r in results)
    assert listener.accepted == 0
    assert {r.error for r in results} <= {"forbidden_url", "network"}
    assert sum(r.error == "forbidden_url" for r in results) >= len(urls) - 2  # odd forms may not parse


def test_redirects_are_checked_at_every_hop(listener: CountingListener) -> None:
    target = f"http://127.0.0.1:{listener.port}/secret"
    server, base = _redirector(target)
    try:
        host = base.removeprefix("http://")
        # the redirector itself is allowlisted (host:port); where it points is not
        fetcher = _fetcher([host])
        try:
            redirected = fetcher.fetch(ImageRef(url=f"{base}/go"))
            looping = fetcher.fetch(ImageRef(url=f"{base}/loop"))
            to_file = _redirect_to(fetcher, "file:///etc/passwd")
        finally:
            fetcher.close()
    finally:
        server.shutdown()
        server.server_close()
    assert listener.accepted == 0
    assert redirected.error == "forbidden_url" and looping.error == "forbidden_url"
    assert "redirects" in looping.detail
    assert to_file.error == "forbidden_url"


def _redirect_to(fetcher: ImageFetcher, target: str) -> object:
    server, base = _redirector(target)
    try:
        fetcher.settings.egress.allow_hosts.append(base.removeprefix("http://"))
        return fetcher.fetch(ImageRef(url=f"{base}/go"))
    finally:
        server.shutdown()
        server.server_close()


def test_an_allowlisted_host_port_is_reached(listener: CountingListener) -> None:
    fetcher = _fetcher([f"127.0.0.1:{listener.port}"])
    try:
        result = fetcher.fetch(ImageRef(url=f"http://127.0.0.1:{listener.port}/a.jpg"))
    finally:
        fetcher.close()
    assert result.data is None and result.error == "network"  # it connected; the listener hung up
    assert listener.accepted >= 1


def test_paths_are_refused_without_roots() -> None:
    fetcher = ImageFetcher()
    try:
        assert fetcher.fetch(ImageRef(path="/etc/passwd")).error == "forbidden_path"
        assert fetcher.fetch(ImageRef(path="/etc/../etc/passwd")).error == "forbidden_path"
    finally:
        fetcher.close()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("239.255.255.250", False),
        ("::1", False),
        ("::", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("ff02::1", False),
        ("::ffff:10.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
    ],
)
def test_address_classes(address: str, allowed: bool) -> None:
    import ipaddress

    assert EgressPolicy().address_allowed(ipaddress.ip_address(address)) is allowed
    net = ipaddress.ip_network(address)
    assert EgressPolicy(allow_networks=[net]).address_allowed(ipaddress.ip_address(address)) or (
        address.startswith(("::ffff:", "2002:"))  # the embedded v4 address is checked too
    )
