"""A process's link to the broker: a health probe that tells the truth within a second, and a
producer that is rebuilt after the broker comes back.

:class:`BrokerLink` probes the bootstrap addresses every ``probe_interval_s`` (a TCP connect; the
first probe that succeeds after an outage also creates the missing topics). Writers ask it first:
while the broker is away, :meth:`BrokerLink.producer` raises :class:`BrokerError` at once instead
of blocking in the Kafka client (``api`` answers 503 within the probe interval). When the probe sees
the broker again after an outage it recreates the topics the process owns (a restarted embedded
broker is empty) and replaces the producer, so no state of the dead broker's session (producer ids,
metadata of deleted topics) survives. ``on_recover`` callbacks then run (e.g. re-seeking followers).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import KafkaError

from coldstart.errors import BrokerError
from coldstart.topics import TOPICS, TopicSpec
from stream.admin import ensure_topics
from stream.config import KafkaSettings
from stream.producer import EventProducer

log = logging.getLogger(__name__)


def group_consumer(bootstrap_servers: str, kafka: KafkaSettings, group_id: str, **options: Any) -> Any:
    """A consumer-group member as coldstart's consumers open it: offsets committed by the caller after
    the write they stand for, topics created by the :class:`TopicKeeper` with ``kafka.partitions``
    (never by a fetch), the earliest offset when the group has none, the group timeouts of ``kafka``;
    ``options`` adds or overrides ``KafkaConsumer`` settings.

    Raises
    ------
    BrokerError
        The consumer cannot be created.
    """
    settings: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "group_id": group_id,
        "client_id": f"{kafka.client_id}-{group_id}",
        "enable_auto_commit": False,
        "allow_auto_create_topics": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": kafka.session_timeout_ms,
        "heartbeat_interval_ms": kafka.heartbeat_interval_ms,
    }
    try:
        return KafkaConsumer(**(settings | options))
    except KafkaError as exc:
        raise BrokerError(f"cannot join group {group_id!r} at {bootstrap_servers}: {exc}") from exc


def broker_reachable(bootstrap_servers: str, timeout_s: float) -> bool:
    """Whether any bootstrap address accepts a TCP connection within ``timeout_s``."""
    for server in bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


class BrokerLink:
    """The broker as one process sees it (thread-safe).

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    settings
        Producer settings.
    topics
        Topics this process owns: created when missing at start and after every outage.
    partitions
        Partitions of a topic it creates.
    probe_interval_s
        Seconds between probes; :attr:`healthy` is never older than twice that.
    make_producer
        Builds a producer (default: an :class:`EventProducer` with ``settings``).
    owns_producers
        Whether the producers ``make_producer`` returns are this link's to close.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        settings: KafkaSettings,
        *,
        topics: Sequence[TopicSpec] = TOPICS,
        partitions: int | None = None,
        probe_interval_s: float = 0.5,
        make_producer: Callable[[], EventProducer] | None = None,
        owns_producers: bool = True,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.settings = settings
        self.topics = tuple(topics)
        self.partitions = partitions or settings.partitions
        self.probe_interval_s = probe_interval_s
        self._make_producer = make_producer or (lambda: EventProducer(bootstrap_servers, settings))
        # False when the factory hands out a producer someone else owns (and closes): it is then
        # dropped, never closed, when replaced
        self.owns_producers = owns_producers
        self._lock = threading.Lock()
        self._producer: EventProducer | None = None
        self._up = False
        self._checked = 0.0
        self._needs_topics = True
        self.outages = 0
        self.recoveries = 0
        self.on_recover: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="broker-probe", daemon=True)
        self._probe()
        self._thread.start()

    @property
    def healthy(self) -> bool:
        """The broker answered the last probe, and that probe is recent."""
        return self._up and time.monotonic() - self._checked <= 2 * self.probe_interval_s + 1.0

    def producer(self) -> EventProducer:
        """The current producer, or :class:`BrokerError` at once while the broker is away."""
        if not self.healthy:
            raise BrokerError(f"Kafka at {self.bootstrap_servers} is unreachable")
        with self._lock:
            if self._producer is None:
                try:
                    self._producer = self._make_producer()
                except BrokerError:
                    self._up = False
                    raise
            return self._producer

    def publish(self, send: Callable[[EventProducer], Any], timeout_s: float) -> Any:
        """Wait at most ``timeout_s`` for the acknowledgement of ``send(producer)`` (a Kafka future).

        Raises
        ------
        BrokerError
            The broker is away, or did not acknowledge in time (the producer is then replaced).
        """
        producer = self.producer()
        try:
            return send(producer).get(timeout=timeout_s)
        except Exception as exc:
            self._discard(producer)
            raise BrokerError(f"publish failed: {type(exc).__name__}: {exc}") from exc

    def _discard(self, producer: EventProducer) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        if self.owns_producers:
            threading.Thread(target=_close_quietly, args=(producer,), daemon=True).start()

    def _probe(self) -> None:
        up = broker_reachable(self.bootstrap_servers, timeout_s=min(1.0, self.probe_interval_s * 2))
        was = self._up
        if up and self._needs_topics:
            try:
                ensure_topics(self.bootstrap_servers, self.partitions, self.topics, timeout_s=5.0)
                self._needs_topics = False
            except BrokerError as exc:
                log.warning("broker answers but topics could not be created yet: %s", exc)
                up = False
        self._up, self._checked = up, time.monotonic()
        if was and not up:
            self.outages += 1
            self._needs_topics = True
            log.warning("Kafka at %s is unreachable", self.bootstrap_servers)
        if up and not was and self.outages:
            self.recoveries += 1
            with self._lock:
                old, self._producer = self._producer, None
            if old is not None and self.owns_producers:
                threading.Thread(target=_close_quietly, args=(old,), daemon=True).start()
            log.warning("Kafka at %s is back (recovery %d)", self.bootstrap_servers, self.recoveries)
            for callback in list(self.on_recover):
                try:
                    callback()
                except Exception:
                    log.exception("on_recover callback failed")

    def _loop(self) -> None:
        while not self._stop.wait(self.probe_interval_s):
            try:
                self._probe()
            except Exception:  # the probe must outlive anything
                log.exception("broker probe failed")

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop probing and close the producer."""
        self._stop.set()
        self._thread.join(timeout_s)
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None and self.owns_producers:
            with contextlib.suppress(Exception):
                producer.close(timeout_s=timeout_s)


class TopicKeeper:
    """Recreates the topics a consumer process owns after its broker comes back empty.

    coldstart's clients ask the broker not to auto-create topics (one made that way gets the
    broker's default partition count, not ``kafka.partitions``; an external Kafka often has
    auto-creation off), so after a broker restart that lost its topics they exist again only when
    someone creates them. A consumer calls :meth:`tick` from its poll loop: at most every
    ``probe_every_s`` it probes the broker (a TCP connect); the first probe that succeeds after a
    failed one creates the missing topics, and so does a check every ``check_every_s`` (a restart
    faster than the probe interval is seen there). The embedded broker ignores the no-auto-create
    request and may recreate a topic first, with its own partition count.

    Parameters
    ----------
    bootstrap_servers
        Kafka address.
    partitions
        Partitions of a topic it creates.
    topics
        The topics the process owns.
    probe_every_s
        Seconds between broker probes.
    check_every_s
        Seconds between topic checks while the broker stays up.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        partitions: int,
        topics: Sequence[TopicSpec] = TOPICS,
        *,
        probe_every_s: float = 1.0,
        check_every_s: float = 30.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.partitions = partitions
        self.topics = tuple(topics)
        self.probe_every_s = probe_every_s
        self.check_every_s = check_every_s
        self.outages = 0
        self.created: list[str] = []
        self._up = True
        self._last_probe = self._last_check = time.monotonic()

    def tick(self) -> list[str]:
        """Probe and create missing topics when due (cheap when not). Returns the names created."""
        now = time.monotonic()
        if now - self._last_probe < self.probe_every_s:
            return []
        self._last_probe = now
        was, self._up = self._up, broker_reachable(self.bootstrap_servers, timeout_s=0.5)
        if not self._up:
            if was:
                self.outages += 1
            return []
        if was and now - self._last_check < self.check_every_s:
            return []
        self._last_check = now
        try:
            created = ensure_topics(self.bootstrap_servers, self.partitions, self.topics, timeout_s=5.0)
        except BrokerError as exc:
            log.warning("topics could not be checked: %s", exc)
            self._up = False  # try again at the next probe
            return []
        if created:
            self.created.extend(created)
            log.warning("recreated missing topics %s on %s", created, self.bootstrap_servers)
        return created


def _close_quietly(producer: Any) -> None:
    with contextlib.suppress(Exception):
        producer.close(timeout_s=1.0)
