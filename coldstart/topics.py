"""coldstart's topics: their names, what each record is keyed by, and the dead-letter naming rule."""

from __future__ import annotations

from dataclasses import dataclass

ITEMS_LISTED = "items.listed"
INTERACTIONS = "interactions"
DECISIONS = "decisions"
ITEMS_STORED = "items.stored"
ITEM_EVIDENCE = "warmup.item_evidence"
DLQ_SUFFIX = ".dlq"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic`` (``items.listed`` → ``items.listed.dlq``)."""
    return topic + DLQ_SUFFIX


@dataclass(frozen=True)
class TopicSpec:
    """A topic and what its records are keyed by (records with one key land on one partition)."""

    name: str
    key: str
    doc: str


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(ITEMS_LISTED, "item_id", "ItemListed events from marketplace backends"),
    TopicSpec(INTERACTIONS, "user_id", "Interaction events (impressions, clicks, ratings...)"),
    TopicSpec(DECISIONS, "user_id", "exploration Decision records"),
    TopicSpec(ITEMS_STORED, "item_id", "ItemStored notifications (feed of in-process pool indexes)"),
    TopicSpec(ITEM_EVIDENCE, "item_id", "ItemEvidence of the partitioned warm-up (user side to item side)"),
    TopicSpec(dlq_topic(ITEMS_LISTED), "source key", "DeadLetter records of the encoder worker"),
    TopicSpec(dlq_topic(INTERACTIONS), "source key", "DeadLetter records of the interaction consumers"),
    TopicSpec(dlq_topic(DECISIONS), "source key", "DeadLetter records of the decisions archive"),
    TopicSpec(
        dlq_topic(ITEM_EVIDENCE), "source key", "DeadLetter records of the partitioned warm-up's item side"
    ),
)
