"""Typed inputs of the exploration report (what a :class:`~exploration.report.source.ReportSource`
loads for a ``[since, until)`` window)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coldstart.decisions import Decision
from feature_repo.records import InteractionLike


@dataclass(frozen=True)
class ItemListing:
    """One item of the catalog as the report sees it.

    Parameters
    ----------
    listed_at
        When the item was listed (timezone-aware UTC).
    graduated_at
        First time its state became ``graduated`` (left the cold pool), ``None`` if it has not.
    """

    item_id: str
    listed_at: datetime
    category: str = ""
    seller_id: str = ""
    graduated_at: datetime | None = None


@dataclass(frozen=True)
class ReportData:
    """Everything one report reads.

    Parameters
    ----------
    since, until
        The window ``[since, until)`` (timezone-aware UTC).
    items
        Every item listed before ``until`` (the corpus).
    decisions
        Decisions with ``since <= ts < until``.
    interactions
        Interactions with ``since <= ts < until + reward window`` (the tail only feeds the rewards
        of decisions near ``until``; KPIs count ``[since, until)``).
    """

    since: datetime
    until: datetime
    items: Sequence[ItemListing]
    decisions: Sequence[Decision]
    interactions: Sequence[InteractionLike]
