"""Cold-item KPIs over a ``[since, until)`` window.

Definitions (``N`` = ``target_impressions``, ``T`` = ``window_hours``; *new items* are the items with
``since <= listed_at < until``; only interactions in ``[since, until)`` are counted):

* time to first impression / first click: hours from listing to the item's first impression / click;
  items without one by ``until`` are *censored* (counted in the ``reached`` shares, not in medians);
* share reaching N within T: among new items with ``listed_at + T <= until`` (a full window is
  observable), the share with ``>= N`` impressions in ``[listed_at, listed_at + T)``;
* impressions until graduation: impressions of a new item from listing to ``graduated_at``, over the
  new items that graduated before ``until``;
* CTR by item-age cohort: clicks / impressions of any item, by the item's age at the event, with a
  95% Wilson interval;
* discoverable corpus: share of the items in the cold corpus during the window (listed before
  ``until``, not graduated before ``since``) with ``>= 1`` impression in the window; also over new items;
* exploration share: share of the window's impressions that came from an exploration slot (they
  carry a ``decision_id``), over all items and over new items.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from coldstart.errors import InvalidInputError
from exploration.report.config import ReportConfig
from exploration.report.records import ReportData

_HOUR = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class KPISummary:
    """Headline numbers (``nan`` where undefined, e.g. no new items)."""

    n_items: int
    n_new_items: int
    n_decisions: int
    n_slots: int
    n_impressions: int
    n_clicks: int
    ctr: float
    exploration_slot_ctr: float
    exploration_share: float
    exploration_share_new_items: float
    share_with_impression: float
    median_hours_to_first_impression: float
    p90_hours_to_first_impression: float
    share_with_click: float
    median_hours_to_first_click: float
    n_eligible_for_goal: int
    share_reaching_goal: float
    n_graduated: int
    median_impressions_until_graduation: float
    mean_impressions_until_graduation: float
    corpus_size: int
    discoverable_corpus: float


@dataclass(frozen=True)
class KPIs:
    """The KPIs of one window.

    Parameters
    ----------
    summary
        Headline numbers.
    items
        One row per new item: ``item_id, listed_at, category, hours_to_first_impression,
        hours_to_first_click, impressions, clicks, impressions_within_window, eligible, reached_goal,
        graduated_at, impressions_until_graduation``.
    cohorts
        One row per age cohort: ``cohort, impressions, clicks, ctr, ctr_low, ctr_high``.
    daily
        One row per UTC day: ``day, new_items, explored_impressions, organic_impressions, clicks``.
    """

    summary: KPISummary
    items: pd.DataFrame
    cohorts: pd.DataFrame
    daily: pd.DataFrame


def validate_window(since: datetime, until: datetime) -> None:
    """``since`` and ``until`` must be timezone-aware and ``since < until``."""
    for name, value in (("since", since), ("until", until)):
        if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInputError(name, value, "must be a timezone-aware datetime (e.g. 2026-01-05T00:00Z)")
    if not since < until:
        raise InvalidInputError("since", since.isoformat(), f"must be before until={until.isoformat()}")


def wilson(successes: float, trials: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (``(nan, nan)`` for 0 trials).

    ``successes > trials`` happens when clicks arrive without their impression events; the share is
    then clipped to 1.
    """
    if trials <= 0:
        return math.nan, math.nan
    p = min(1.0, max(0.0, successes / trials))
    den = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / den
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _median(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.median()) if len(s) else math.nan


def _share(mask: pd.Series) -> float:
    return float(mask.mean()) if len(mask) else math.nan


def _events(data: ReportData, cfg: ReportConfig) -> pd.DataFrame:
    rows = [
        (i.item_id, i.kind, pd.Timestamp(i.ts), i.decision_id)
        for i in data.interactions
        if data.since <= i.ts < data.until
    ]
    ev = pd.DataFrame(rows, columns=["item_id", "kind", "ts", "decision_id"])
    if cfg.slots_count_as_impressions:
        seen = set(
            zip(
                ev.loc[ev.kind == "impression", "decision_id"],
                ev.loc[ev.kind == "impression", "item_id"],
                strict=True,
            )
        )
        extra = [
            (s.item_id, "impression", pd.Timestamp(d.ts), d.decision_id)
            for d in data.decisions
            for s in d.slots
            if (d.decision_id, s.item_id) not in seen and data.since <= d.ts < data.until
        ]
        ev = pd.concat([ev, pd.DataFrame(extra, columns=ev.columns)], ignore_index=True)
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
    ev["is_imp"] = ev["kind"] == "impression"
    ev["is_click"] = ev["kind"].isin(cfg.click_kinds)
    # an explored slot counts one impression and one click, however often either was sent (the raw
    # events stay in the log); organic events have no slot to count them by
    ev = ev.sort_values("ts", kind="stable")
    dup = ev.decision_id.notna() & ev.duplicated(["decision_id", "item_id", "is_imp", "is_click"])
    ev = ev[~(dup & (ev.is_imp | ev.is_click))].reset_index(drop=True)
    ev["explored"] = ev["decision_id"].notna()
    return ev


def compute_kpis(data: ReportData, config: ReportConfig | None = None) -> KPIs:
    """The KPIs of ``data``'s window (see the module docstring for the definitions)."""
    cfg = config or ReportConfig()
    validate_window(data.since, data.until)
    since, until = pd.Timestamp(data.since), pd.Timestamp(data.until)
    T = pd.Timedelta(hours=cfg.window_hours)
    items = pd.DataFrame(
        [
            (i.item_id, i.listed_at, i.category, i.graduated_at)
            for i in data.items
            if i.listed_at < data.until
        ],
        columns=["item_id", "listed_at", "category", "graduated_at"],
    ).drop_duplicates("item_id", keep="last")
    items["listed_at"] = pd.to_datetime(items["listed_at"], utc=True)
    items["graduated_at"] = pd.to_datetime(items["graduated_at"], utc=True)
    ev = _events(data, cfg).merge(items[["item_id", "listed_at"]], on="item_id", how="left")
    imps, clicks = ev[ev.is_imp], ev[ev.is_click]

    new = items[(items.listed_at >= since) & (items.listed_at < until)].copy()
    after = ev[ev.item_id.isin(new.item_id) & (ev.ts >= ev.listed_at)]
    first_imp = after[after.is_imp].groupby("item_id").ts.min()
    first_click = after[after.is_click].groupby("item_id").ts.min()
    new["hours_to_first_impression"] = (new.item_id.map(first_imp) - new.listed_at) / _HOUR
    new["hours_to_first_click"] = (new.item_id.map(first_click) - new.listed_at) / _HOUR
    new["impressions"] = new.item_id.map(after[after.is_imp].groupby("item_id").size()).fillna(0).astype(int)
    new["clicks"] = new.item_id.map(after[after.is_click].groupby("item_id").size()).fillna(0).astype(int)
    in_window = after[after.is_imp & (after.ts < after.listed_at + T)]
    new["impressions_within_window"] = (
        new.item_id.map(in_window.groupby("item_id").size()).fillna(0).astype(int)
    )
    new["eligible"] = new.listed_at + T <= until
    new["reached_goal"] = new.eligible & (new.impressions_within_window >= cfg.target_impressions)
    grad = new.graduated_at.notna() & (new.graduated_at < until) & (new.graduated_at >= new.listed_at)
    imp_until = after[after.is_imp].merge(new[["item_id", "graduated_at"]], on="item_id")
    imp_until = imp_until[imp_until.ts <= imp_until.graduated_at].groupby("item_id").size()
    new["impressions_until_graduation"] = np.where(grad, new.item_id.map(imp_until).fillna(0), np.nan)
    new = new.sort_values("listed_at").reset_index(drop=True)

    # CTR by item-age cohort (any item with a known listing time)
    aged = ev[ev.listed_at.notna()].copy()
    aged["age_h"] = (aged.ts - aged.listed_at) / _HOUR
    edges = [0.0, *cfg.cohort_edges_hours, math.inf]
    labels = [_cohort_label(a, b) for a, b in itertools.pairwise(edges)]
    aged["cohort"] = pd.cut(aged.age_h.clip(lower=0.0), bins=edges, right=False, labels=labels)
    rows = []
    for label in labels:
        part = aged[aged.cohort == label]
        n_i, n_c = int(part.is_imp.sum()), int(part.is_click.sum())
        low, high = wilson(n_c, n_i)
        rows.append((label, n_i, n_c, n_c / n_i if n_i else math.nan, low, high))
    cohorts = pd.DataFrame(rows, columns=["cohort", "impressions", "clicks", "ctr", "ctr_low", "ctr_high"])

    # corpus discoverability and exploration share
    corpus = items[items.graduated_at.isna() | (items.graduated_at >= since)]
    seen = set(imps.item_id)
    new_imps = imps[imps.item_id.isin(new.item_id)]

    # daily series
    days = pd.date_range(since.floor("D"), (until - pd.Timedelta(microseconds=1)).floor("D"), freq="D")
    daily = pd.DataFrame({"day": days})
    new_imps_day = new_imps.assign(day=new_imps.ts.dt.floor("D"))
    daily["new_items"] = daily.day.map(new.groupby(new.listed_at.dt.floor("D")).size()).fillna(0).astype(int)
    by_day = new_imps_day.groupby(["day", "explored"]).size()
    daily["explored_impressions"] = [int(by_day.get((d, True), 0)) for d in daily.day]
    daily["organic_impressions"] = [int(by_day.get((d, False), 0)) for d in daily.day]
    daily["clicks"] = daily.day.map(clicks.groupby(clicks.ts.dt.floor("D")).size()).fillna(0).astype(int)

    decisions = [d for d in data.decisions if data.since <= d.ts < data.until]
    slots = {(d.decision_id, s.item_id) for d in decisions for s in d.slots}
    slot_clicks = {
        (c.decision_id, c.item_id) for c in clicks.itertuples() if (c.decision_id, c.item_id) in slots
    }
    graduated = new[grad]
    summary = KPISummary(
        n_items=len(items),
        n_new_items=len(new),
        n_decisions=len(decisions),
        n_slots=len(slots),
        n_impressions=len(imps),
        n_clicks=len(clicks),
        ctr=len(clicks) / len(imps) if len(imps) else math.nan,
        exploration_slot_ctr=len(slot_clicks) / len(slots) if slots else math.nan,
        exploration_share=_share(imps.explored),
        exploration_share_new_items=_share(new_imps.explored),
        share_with_impression=_share(new.hours_to_first_impression.notna()),
        median_hours_to_first_impression=_median(new.hours_to_first_impression),
        p90_hours_to_first_impression=float(new.hours_to_first_impression.dropna().quantile(0.9))
        if new.hours_to_first_impression.notna().any()
        else math.nan,
        share_with_click=_share(new.hours_to_first_click.notna()),
        median_hours_to_first_click=_median(new.hours_to_first_click),
        n_eligible_for_goal=int(new.eligible.sum()),
        share_reaching_goal=_share(new.reached_goal[new.eligible]),
        n_graduated=len(graduated),
        median_impressions_until_graduation=_median(graduated.impressions_until_graduation),
        mean_impressions_until_graduation=float(graduated.impressions_until_graduation.mean())
        if len(graduated)
        else math.nan,
        corpus_size=len(corpus),
        discoverable_corpus=_share(corpus.item_id.isin(seen)),
    )
    return KPIs(summary=summary, items=new, cohorts=cohorts, daily=daily)


def _fmt_h(h: float) -> str:
    return f"{h / 24:g}d" if h >= 24 and h % 24 == 0 else f"{h:g}h"


def _cohort_label(a: float, b: float) -> str:
    return f">= {_fmt_h(a)}" if math.isinf(b) else f"{_fmt_h(a)}-{_fmt_h(b)}"
