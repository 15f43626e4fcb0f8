"""A loopback HTTP server that serves a directory's images (demo, benchmarks, tests).

It stands in for a marketplace's image CDN: events carry ``http://127.0.0.1:PORT/<relative path>``
URLs and the encoder worker fetches them like any other image URL. Only GET/HEAD of files inside the
root are served; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import mimetypes
import multiprocessing
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit


class _Handler(BaseHTTPRequestHandler):
    # keep-alive: a worker's pooled client fetches a batch's images over a few connections instead
    # of a TCP connection (and a server thread) per image; every response carries Content-Length
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, *, body: bool) -> None:
        rel = unquote(urlsplit(self.path).path).lstrip("/")
        root = self.server.root
        target = Path(os.path.normpath(root / rel))
        if not target.is_relative_to(root) or not target.is_file():
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        data = target.read_bytes()
        ctype = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default listen backlog is 5: a worker fetching a batch's images concurrently
    # overflows it, the kernel drops the extra SYNs and those fetches stall for the 1 s SYN retransmit
    request_queue_size = 128
    root: Path


class ImageServer:
    """Serve ``root`` on ``http://127.0.0.1:port/`` from a background thread or a child process.

    Parameters
    ----------
    root
        Directory to serve (symlinks inside it are followed).
    port
        TCP port (0 = any free port).
    process
        Serve from a child process instead of a thread of this one: the stand-in CDN then takes no
        GIL from the code that fetches from it (benchmarks measuring an in-process worker).
    """

    def __init__(self, root: Path, port: int = 0, *, process: bool = False) -> None:
        self.root = Path(os.path.abspath(root))
        self.process = process
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._proc: Any = None
        if not process:
            self._server = _Server(("127.0.0.1", port), _Handler)
            self._server.root = self.root
            self._port = int(self._server.server_address[1])
            self._thread = threading.Thread(
                target=self._server.serve_forever, name="image-server", daemon=True
            )

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def host_port(self) -> str:
        """``127.0.0.1:PORT``: the entry that allowlists this server alone in an egress policy."""
        return f"127.0.0.1:{self._port}"

    def url(self, path: Path) -> str:
        """The URL of ``path`` (a file under ``root``)."""
        rel = Path(os.path.abspath(path)).relative_to(self.root) if Path(path).is_absolute() else Path(path)
        return f"{self.base_url}/{quote(rel.as_posix())}"

    def start(self) -> ImageServer:
        """Start serving (in process mode: once the child answers on its port)."""
        if self._thread is not None:
            self._thread.start()
            return self

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve_in_child, args=(str(self.root), self._port, child), daemon=True
        )
        self._proc.start()
        if not parent.poll(60.0):
            self._proc.kill()
            raise RuntimeError("the image server process did not start within 60 s")
        self._port = int(parent.recv())
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(10.0)

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _serve_in_child(root: str, port: int, conn: Any) -> None:  # pragma: no cover - child process
    server = ImageServer(Path(root), port)
    conn.send(server._port)
    assert server._server is not None
    server._server.serve_forever()
