"""Creating and describing coldstart's topics on a broker (kafka-python admin client)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from coldstart.errors import BrokerError
from coldstart.topics import TOPICS, TopicSpec

log = logging.getLogger(__name__)


def ensure_topics(
    bootstrap_servers: str,
    partitions: int,
    topics: Sequence[TopicSpec] = TOPICS,
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet, each with ``partitions`` partitions.

    Existing topics are left alone (their partition count is not changed). Returns the names created.

    Raises
    ------
    BrokerError
        The broker cannot be reached or refuses to create a topic.
    """

    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="coldstart-admin")
        except KafkaError as exc:
            last = exc
            time.sleep(0.2)
            continue
        try:
            existing = set(admin.list_topics())
            created: list[str] = []
            for spec in topics:
                if spec.name in existing:
                    continue
                try:
                    admin.create_topics([NewTopic(spec.name, partitions, 1)])
                    created.append(spec.name)
                except TopicAlreadyExistsError:
                    pass
            return created
        except KafkaError as exc:
            last = exc
            time.sleep(0.2)
        finally:
            admin.close()
    raise BrokerError(f"could not create topics on {bootstrap_servers} within {timeout_s:.0f}s: {last}")


def topic_id(bootstrap_servers: str, topic: str) -> str | None:
    """The Kafka topic id of ``topic`` (a re-created topic gets a new one); ``None`` when the broker
    does not say (older brokers, the zero id) or cannot be asked."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="coldstart-admin")
        try:
            described = admin.describe_topics([topic])
        finally:
            admin.close()
    except KafkaError as exc:
        log.warning("cannot read the topic id of %s: %s", topic, exc)
        return None
    found = str(described[0].get("topic_id") or "") if described else ""
    return None if not found or found == "00000000-0000-0000-0000-000000000000" else found


def partition_count(bootstrap_servers: str, topic: str) -> int:
    """Number of partitions of ``topic`` (raises :class:`BrokerError` when it does not exist)."""

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, client_id="coldstart-meta")
    try:
        parts = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    if not parts:
        raise BrokerError(f"topic {topic!r} does not exist on {bootstrap_servers}")
    return len(parts)
