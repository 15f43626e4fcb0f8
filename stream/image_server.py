"""A loopback HTTP server that serves a directory's images (demo, benchmarks, tests).

It stands in for a marketplace's image CDN: events carry ``http://127.0.0.1:PORT/<relative path>``
URLs and the encoder worker fetches them like any other image URL. Only GET/HEAD of files inside the
root are served; it binds 127.0.0.1 only.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import quote, unquote, urlsplit


class _Handler(BaseHTTPRequestHandler):
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
    """Serve ``root`` on ``http://127.0.0.1:port/`` from a background thread.

    Parameters
    ----------
    root
        Directory to serve (symlinks inside it are followed).
    port
        TCP port (0 = any free port).
    """

    def __init__(self, root: Path, port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.root = Path(os.path.abspath(root))
        self._thread = threading.Thread(target=self._server.serve_forever, name="image-server", daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: Path) -> str:
        """The URL of ``path`` (a file under ``root``)."""
        rel = (
            Path(os.path.abspath(path)).relative_to(self._server.root)
            if Path(path).is_absolute()
            else Path(path)
        )
        return f"{self.base_url}/{quote(rel.as_posix())}"

    def start(self) -> ImageServer:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
