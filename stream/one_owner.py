"""A consumer-group assignor that gives every partition to one member: the policy learner of a group
of several learners (``warmup.layout = "partitioned"``)."""

from __future__ import annotations

from typing import Any

from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription


class OneOwnerAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    """Gives every partition of the group's topics to one member (the policy is one model): the
    member that owned them in the last generation when it is still there, else the smallest member
    id. The others stay in the group with nothing assigned, ready to take over."""

    name = "coldstart-one-owner"
    version = 0

    def __init__(self) -> None:
        self.owner = False

    def assign(self, cluster: Any, members: Any) -> dict[str, Any]:
        ids = sorted(m.member_id for m in members)
        sitting = [m.member_id for m in members if m.metadata.user_data == b"owner"]
        owner = min(sitting) if sitting else ids[0]
        topics = sorted({t for m in members for t in m.metadata.topics})
        everything = [(t, sorted(cluster.partitions_for_topic(t) or [])) for t in topics]
        return {
            m: ConsumerProtocolAssignment(self.version, everything if m == owner else [], b"") for m in ids
        }

    def metadata(self, topics: Any) -> Any:
        return ConsumerProtocolSubscription(self.version, list(topics), b"owner" if self.owner else b"")

    def on_assignment(self, assignment: Any, generation: Any = None) -> None:
        self.owner = bool(assignment.partitions())
