"""Fetching item images for the encoder worker: http/https URLs, local paths, inline base64.

A failed fetch is never an error of the event: :meth:`ImageFetcher.fetch` returns a
:class:`FetchResult` with ``data=None`` and a reason, and the item is encoded text-only
(``image_ok=false``).
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from coldstart.contracts import ImageRef
from stream.config import ImageFetchSettings
from stream.egress import EgressRefused, RedirectRefused, get_following_redirects, guarded_client

FetchError = Literal[
    "http_status",
    "content_type",
    "too_large",
    "timeout",
    "network",
    "not_found",
    "forbidden_path",
    "forbidden_url",
    "invalid",
]


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one fetch: ``data`` (encoded image bytes) or ``error`` + ``detail``."""

    data: bytes | None
    error: FetchError | None = None
    detail: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether bytes were obtained (they may still fail to decode in the encoder)."""
        return self.data is not None


class ImageFetcher:
    """Fetches images concurrently with a per-image deadline, a byte cap and a content-type check.

    URLs go through the egress policy (``settings.egress``, :mod:`stream.egress`); local paths are
    read only inside ``settings.path_roots`` (none by default: every path is refused).

    Parameters
    ----------
    settings
        Timeout (s), byte cap, concurrency and allowed path roots.
    """

    def __init__(self, settings: ImageFetchSettings | None = None) -> None:
        self.settings = settings or ImageFetchSettings()
        self._client = guarded_client(
            self.settings.egress,
            timeout_s=self.settings.timeout_s,
            max_connections=self.settings.concurrency * 2,
        )
        self._pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="image-fetch")
        self._roots = [Path(r).resolve() for r in self.settings.path_roots]
        self._lexical_roots = [Path(os.path.abspath(r)) for r in self.settings.path_roots]

    def submit(self, refs: Sequence[ImageRef | None]) -> list[Future[FetchResult]]:
        """Start fetching ``refs`` (``None`` = no image) in the background; one future per ref."""
        return [self._pool.submit(self.fetch, ref) for ref in refs]

    def fetch_many(self, refs: Sequence[ImageRef | None]) -> list[FetchResult]:
        """Fetch ``refs`` concurrently and wait for all of them."""
        return [f.result() for f in self.submit(refs)]

    def fetch(self, ref: ImageRef | None) -> FetchResult:
        """Fetch one image (never raises for a bad image; see :class:`FetchResult`)."""
        start = time.perf_counter()
        if ref is None:
            return FetchResult(None, "invalid", "no image")
        if ref.url:
            result = self._fetch_url(ref.url)
        elif ref.path:
            result = self._read_path(ref.path)
        else:
            result = self._decode_base64(ref.base64 or "")
        return FetchResult(result.data, result.error, result.detail, time.perf_counter() - start)

    def _fetch_url(self, url: str) -> FetchResult:
        cap = self.settings.max_bytes
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            with get_following_redirects(
                self._client, url, self.settings.egress, headers={"Accept": "image/*"}
            ) as resp:
                if resp.status_code != 200:
                    return FetchResult(None, "http_status", f"HTTP {resp.status_code} for {url}")
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                if not ctype.startswith("image/"):
                    return FetchResult(None, "content_type", f"content-type {ctype or 'missing'!r} for {url}")
                declared = resp.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > cap:
                    return FetchResult(None, "too_large", f"content-length {declared} > cap {cap} for {url}")
                chunks: list[bytes] = []
                size = 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        return FetchResult(None, "too_large", f"body over the cap of {cap} bytes for {url}")
                    if time.monotonic() > deadline:
                        return FetchResult(None, "timeout", f"slower than {self.settings.timeout_s}s: {url}")
                    chunks.append(chunk)
                return FetchResult(b"".join(chunks))
        except (EgressRefused, RedirectRefused) as exc:
            return FetchResult(None, "forbidden_url", f"{exc} for {url}")
        except httpx.ConnectError as exc:
            kind: FetchError = "forbidden_url" if isinstance(exc.__context__, EgressRefused) else "network"
            return FetchResult(None, kind, f"{exc} for {url}")
        except httpx.TimeoutException:
            return FetchResult(None, "timeout", f"no answer within {self.settings.timeout_s}s: {url}")
        except (httpx.HTTPError, OSError) as exc:
            return FetchResult(None, "network", f"{type(exc).__name__}: {exc} for {url}")
        except Exception as exc:  # a URL httpx cannot parse (bad host, port...): never the caller's crash
            return FetchResult(None, "invalid", f"{type(exc).__name__}: {exc} for {url[:200]!r}")

    def _read_path(self, raw: str) -> FetchResult:
        # inside a root once resolved, or as written (symlinks an operator placed under a root are
        # followed) when it has no "..": a written path cannot climb out through such a symlink
        if "\x00" in raw:
            return FetchResult(None, "forbidden_path", "a path with NUL is refused")
        path = Path(os.path.abspath(raw))
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:
            return FetchResult(None, "not_found", f"{raw}: {exc}")
        lexical = ".." not in Path(raw).parts and any(path.is_relative_to(r) for r in self._lexical_roots)
        inside = lexical or any(resolved.is_relative_to(r) for r in self._roots)
        if not inside:
            why = (
                "outside the allowed image roots"
                if self._roots
                else "refused: no image path roots configured"
            )
            return FetchResult(None, "forbidden_path", f"{raw} is {why}")
        try:
            size = resolved.stat().st_size
            if size > self.settings.max_bytes:
                return FetchResult(
                    None, "too_large", f"{raw} has {size} bytes > cap {self.settings.max_bytes}"
                )
            return FetchResult(resolved.read_bytes())
        except OSError as exc:
            return FetchResult(None, "not_found", f"{raw}: {exc.strerror or exc}")

    def _decode_base64(self, raw: str) -> FetchResult:
        if len(raw) * 3 // 4 > self.settings.max_bytes + 3:
            return FetchResult(
                None, "too_large", f"inline image over the cap of {self.settings.max_bytes} bytes"
            )
        try:
            return FetchResult(base64.b64decode(raw, validate=True))
        except (binascii.Error, ValueError) as exc:
            return FetchResult(None, "invalid", f"invalid base64: {exc}")

    def close(self) -> None:
        """Stop the fetch threads and close HTTP connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
