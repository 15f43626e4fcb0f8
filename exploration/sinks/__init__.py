"""Where decisions go: the decision log's sinks (decisions topic, offline store).

A sink's ``publish`` must not block a request: the Kafka sinks enqueue into a bounded queue (drops
counted) read by a thread (:class:`KafkaDecisionSink`) or by a child process that owns its own
producer (:class:`ProcessKafkaDecisionSink`, the API's default: the Kafka client's Python work then
stays off the serving process's GIL); the offline sink queues it for a background writer thread that
writes micro-batches.
"""

from exploration.sinks.base import DecisionSink
from exploration.sinks.kafka import DecisionProducer, KafkaDecisionSink
from exploration.sinks.offline import DecisionWriter, MemoryDecisionSink, OfflineDecisionSink
from exploration.sinks.process import ProcessKafkaDecisionSink

__all__ = [
    "DecisionProducer",
    "DecisionSink",
    "DecisionWriter",
    "KafkaDecisionSink",
    "MemoryDecisionSink",
    "OfflineDecisionSink",
    "ProcessKafkaDecisionSink",
]
