"""The feature-store interface the rest of coldstart uses (implemented over Feast).

Writers call :meth:`FeatureStore.write_items` once per micro-batch; it writes the online store AND
the offline history, and is idempotent (re-writing the same row is harmless). Implementations are
chosen by the ``type`` of ``settings.feast`` (embedded: SQLite + files; production: Redis + PostgreSQL).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Literal

from feature_repo.records import StoredItem, StoredUser

WriteMode = Literal["full", "content", "state"]


class FeatureStore(ABC):
    """Online/offline access to item and user features."""

    @abstractmethod
    def write_items(self, items: Sequence[StoredItem], mode: WriteMode = "full") -> None:
        """Write rows to the online store and append them to the offline history (idempotent).

        ``mode``: ``full`` writes content and warm-up state as given; ``content`` (the encoder's choice)
        writes the content plus the initial state only for items that have none, so re-listing never
        resets a warm-up; ``state`` (the learner's choice) writes the state only.
        """

    @abstractmethod
    def get_items(self, item_ids: Sequence[str]) -> dict[str, StoredItem]:
        """Online read; ids that are not stored are absent from the result."""

    @abstractmethod
    def iter_items(self) -> Iterator[StoredItem]:
        """Every item currently in the online store (used to rebuild the pool index at start-up)."""

    @abstractmethod
    def users(self) -> UserStore:
        """The user side of the store."""

    def write_states(self, items: Sequence[StoredItem], users: Sequence[StoredUser]) -> None:
        """The learner's write of one batch: item state rows and user rows, online and offline.

        The caller is the single writer of these rows and orders them itself (its timestamps grow
        per entity), so a store may skip the read-and-compare guard of ``write_items`` /
        ``write_users``; this default keeps it.
        """
        self.write_items(items, mode="state")
        self.users().write_users(users)


class UserStore(ABC):
    """Online access to user vectors."""

    @abstractmethod
    def write_users(self, users: Sequence[StoredUser]) -> None:
        """Write user rows online (and to the offline history)."""

    @abstractmethod
    def get_users(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Online read; unknown users are absent."""
