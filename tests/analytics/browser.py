"""Drive Debian's headless Chromium through chromedriver's W3C WebDriver HTTP API (httpx over loopback,
no selenium): open a page, collect its console messages, read DOM attributes, take a screenshot."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
    "--hide-scrollbars",
]
ENSURE = Path(__file__).with_name("ensure_chromium.sh")


def ensure_binaries() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing them (idempotent script) when missing."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        subprocess.run(["bash", str(ENSURE)], check=True, timeout=600)
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "chromium / chromedriver not installed"
    return chromium, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HeadlessChromium:
    """One chromedriver process and one browser session with a fresh ``--user-data-dir``."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        chromium, driver = ensure_binaries()
        self._profile = tempfile.TemporaryDirectory(prefix="coldstart-chromium-")
        port = _free_port()
        self._proc = subprocess.Popen(
            [driver, f"--port={port}", "--allowed-ips=127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._http.get("/status").json()["value"]["ready"]:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromedriver did not start")
            time.sleep(0.1)
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [*FLAGS, f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}"],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        }
        resp = self._http.post("/session", json={"capabilities": {"alwaysMatch": caps}}).json()
        if "sessionId" not in resp.get("value", {}):
            self.close()
            raise RuntimeError(f"cannot start a browser session: {resp}")
        self._sid = resp["value"]["sessionId"]

    def _cmd(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self._http.request(method, f"/session/{self._sid}{path}", json=body)
        value = r.json()["value"]
        if r.status_code >= 400:
            raise RuntimeError(f"webdriver {path}: {value}")
        return value

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._cmd("POST", "/url", {"url": url})

    def run(self, script: str, *args: Any) -> Any:
        """Execute synchronous JavaScript (``return ...``)."""
        return self._cmd("POST", "/execute/sync", {"script": script, "args": list(args)})

    def console(self) -> list[dict[str, Any]]:
        """Browser console entries since the last call: ``{level, message, source, timestamp}``."""
        return list(self._cmd("POST", "/se/log", {"type": "browser"}))

    def screenshot(self, path: Path, full_page: bool = True) -> None:
        """PNG of the viewport, resized to the page's height first when ``full_page``."""
        if full_page:
            height = int(self.run("return document.documentElement.scrollHeight"))
            width = int(self.run("return window.outerWidth"))
            self._cmd("POST", "/window/rect", {"width": width, "height": min(height + 120, 12000)})
        path.write_bytes(base64.b64decode(self._cmd("GET", "/screenshot")))

    def close(self) -> None:
        """End the session and the driver (the browser exits with it)."""
        try:
            if getattr(self, "_sid", None):
                self._http.delete(f"/session/{self._sid}")
        except httpx.HTTPError:
            pass
        self._http.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._profile.cleanup()

    def __enter__(self) -> HeadlessChromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
