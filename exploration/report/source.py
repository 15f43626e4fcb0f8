"""Where the report's data comes from: an interface and its implementations.

* :class:`OfflineStoreSource` reads the offline store (:class:`feature_repo.offline.base.OfflineLog`:
  parquet files in the embedded store, PostgreSQL tables in production);
* :class:`InMemorySource` serves records already in memory (tests, notebooks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from coldstart.decisions import Decision
from exploration.report.kpis import validate_window
from exploration.report.records import ItemListing, ReportData
from feature_repo.records import InteractionLike

if TYPE_CHECKING:
    from feature_repo.offline.base import OfflineLog


class ReportSource(ABC):
    """Loads the data of one report window."""

    def load(self, since: datetime, until: datetime, lookahead: timedelta = timedelta(0)) -> ReportData:
        """Items listed before ``until``, decisions in ``[since, until)`` and interactions in
        ``[since, until + lookahead)`` (``lookahead`` = the reward window)."""
        validate_window(since, until)
        return self._load(since, until, lookahead)

    @abstractmethod
    def _load(self, since: datetime, until: datetime, lookahead: timedelta) -> ReportData:
        """Implementation of :meth:`load` (arguments already validated)."""


class InMemorySource(ReportSource):
    """Records held in memory, filtered by window."""

    def __init__(
        self,
        items: Sequence[ItemListing],
        decisions: Sequence[Decision],
        interactions: Sequence[InteractionLike],
    ) -> None:
        self.items = list(items)
        self.decisions = list(decisions)
        self.interactions = list(interactions)

    def _load(self, since: datetime, until: datetime, lookahead: timedelta) -> ReportData:
        return ReportData(
            since=since,
            until=until,
            items=[i for i in self.items if i.listed_at < until],
            decisions=[d for d in self.decisions if since <= d.ts < until],
            interactions=[i for i in self.interactions if since <= i.ts < until + lookahead],
        )


class OfflineStoreSource(ReportSource):
    """Reads the offline store's ``item_content``, ``item_state``, ``decisions`` and ``interactions``.

    An item's listing comes from its latest content row before ``until``; its ``graduated_at`` is
    the first ``item_state`` row with ``status == "graduated"``.
    """

    def __init__(self, log: OfflineLog) -> None:
        self.log = log

    def _load(self, since: datetime, until: datetime, lookahead: timedelta) -> ReportData:
        content = self.log.frame("item_content", None, until)
        items: list[ItemListing] = []
        if len(content):
            latest = content.sort_values("event_ts").drop_duplicates("item_id", keep="last")
            state = self.log.frame("item_state", None, until)
            graduated: dict[str, datetime] = {}
            if len(state):
                g = state[state["status"] == "graduated"].groupby("item_id")["event_ts"].min()
                graduated = {str(k): pd.Timestamp(v).to_pydatetime() for k, v in g.items()}
            for r in latest.itertuples(index=False):
                items.append(
                    ItemListing(
                        item_id=str(r.item_id),
                        listed_at=pd.Timestamp(r.listed_at).to_pydatetime(),
                        category=str(r.category or ""),
                        seller_id=str(r.seller_id or ""),
                        graduated_at=graduated.get(str(r.item_id)),
                    )
                )
        return ReportData(
            since=since,
            until=until,
            items=items,
            decisions=self.log.read_decisions(since, until),
            interactions=self.log.read_interactions(since, until + lookahead),
        )
