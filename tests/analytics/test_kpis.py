"""KPIs on a tiny hand-built log, checked against values computed by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from coldstart.contracts import Interaction
from coldstart.decisions import Candidate, Decision, Slot
from coldstart.errors import InvalidInputError
from exploration.ope import IPS, SNIPS, BanditLog, UniformPolicy, evaluate, join_rewards
from exploration.report import InMemorySource, ItemListing, ReportConfig, compute_kpis

DAY = datetime(2026, 1, 5, tzinfo=UTC)


def at(h: float, day: datetime = DAY) -> datetime:
    return day + timedelta(hours=h)


ITEMS = [
    ItemListing("A", at(0), "shoes", graduated_at=at(10)),
    ItemListing("B", at(2), "books"),
    ItemListing("C", at(20), "books"),
    ItemListing("D", at(-12), "shoes"),  # old, still cold: in the corpus, not new
    ItemListing("E", at(-48), "shoes", graduated_at=at(-24)),  # graduated before the window
    ItemListing("F", at(25), "shoes"),  # listed after the window
]


def _decision(
    did: str, ts: datetime, cands: list[tuple[str, float]], slots: list[tuple[str, float]]
) -> Decision:
    return Decision(
        decision_id=did,
        ts=ts,
        user_id="u1",
        context={"x": 1.0},
        policy="test",
        model_version="v1",
        candidates=[Candidate(item_id=i, probability=p, score=p) for i, p in cands],
        slots=[Slot(item_id=i, position=k, propensity=p, score=0.0) for k, (i, p) in enumerate(slots)],
    )


DECISIONS = [
    _decision("d1", at(1), [("A", 0.6), ("D", 0.4)], [("A", 0.6), ("D", 1.0)]),
    _decision("d2", at(2.5), [("A", 0.2), ("B", 0.5), ("D", 0.3)], [("B", 0.5)]),
]

_n = 0


def ev(
    item: str, kind: str, ts: datetime, decision: str | None = None, pos: int | None = None
) -> Interaction:
    global _n
    _n += 1
    return Interaction(
        event_id=f"e{_n}", user_id="u1", item_id=item, kind=kind, ts=ts, decision_id=decision, position=pos
    )


INTERACTIONS = [
    ev("D", "impression", at(-1)),  # before the window
    ev("A", "impression", at(1), "d1", 0),
    ev("D", "impression", at(1), "d1", 1),
    ev("A", "click", at(1) + timedelta(minutes=2), "d1", 0),
    ev("B", "impression", at(2.5), "d2", 0),
    ev("A", "impression", at(3)),
    ev("B", "click", at(5)),
    ev("A", "impression", at(7)),
    ev("B", "impression", at(9)),
    ev("A", "impression", at(11)),
    ev("B", "impression", at(24, DAY) + timedelta(minutes=10)),  # after the window
]

CFG = ReportConfig(target_impressions=2, window_hours=6.0)


@pytest.fixture(scope="module")
def kpis():
    data = InMemorySource(ITEMS, DECISIONS, INTERACTIONS).load(DAY, at(24), timedelta(minutes=5))
    return compute_kpis(data, CFG)


def test_summary_matches_hand_computed(kpis):
    s = kpis.summary
    assert s.n_new_items == 3  # A, B, C
    assert s.n_items == 5  # F is listed after 'until'
    assert (s.n_decisions, s.n_slots) == (2, 3)
    assert s.n_impressions == 7  # A x4, B x2, D x1 inside the window
    assert s.n_clicks == 2
    assert s.ctr == pytest.approx(2 / 7)
    assert s.exploration_share == pytest.approx(3 / 7)
    assert s.exploration_share_new_items == pytest.approx(2 / 6)
    assert s.exploration_slot_ctr == pytest.approx(1 / 3)
    assert s.share_with_impression == pytest.approx(2 / 3)  # C never shown
    assert s.median_hours_to_first_impression == pytest.approx((1.0 + 0.5) / 2)
    assert s.share_with_click == pytest.approx(2 / 3)
    assert s.median_hours_to_first_click == pytest.approx((1 + 2 / 60 + 3.0) / 2)  # A: 1h02, B: 3h
    assert s.n_eligible_for_goal == 2  # C's 6 h window ends after 'until'
    assert s.share_reaching_goal == pytest.approx(0.5)  # A: 2 in [0h, 6h); B: 1 in [2h, 8h)
    assert s.n_graduated == 1
    assert s.median_impressions_until_graduation == 3  # A at 1h, 3h, 7h; graduated at 10h
    assert s.corpus_size == 4  # A, B, C, D (E graduated before 'since')
    assert s.discoverable_corpus == pytest.approx(3 / 4)


def test_per_item_table(kpis):
    items = kpis.items.set_index("item_id")
    assert list(items.index) == ["A", "B", "C"]
    assert items.loc["A", "hours_to_first_impression"] == pytest.approx(1.0)
    assert items.loc["B", "hours_to_first_click"] == pytest.approx(3.0)
    assert math.isnan(items.loc["C", "hours_to_first_impression"])
    assert list(items.impressions_within_window) == [2, 1, 0]
    assert list(items.reached_goal) == [True, False, False]
    assert items.loc["A", "impressions"] == 4


def test_ctr_by_age_cohort(kpis):
    c = kpis.cohorts.set_index("cohort")
    assert list(c.index) == ["0h-1h", "1h-6h", "6h-1d", "1d-3d", "3d-7d", ">= 7d"]
    # 0-1h: B@0.5h; 1-6h: A@1h, A@3h, clicks A@1.03h, B@3h; 6h-1d: A@7h, A@11h, B@7h, D@13h
    assert list(c.impressions) == [1, 2, 4, 0, 0, 0]
    assert list(c.clicks) == [0, 2, 0, 0, 0, 0]
    assert c.loc["1h-6h", "ctr"] == pytest.approx(1.0)
    lo, hi = c.loc["0h-1h", "ctr_low"], c.loc["0h-1h", "ctr_high"]
    assert lo == 0.0 and 0.7 < hi < 0.85  # Wilson, 0 of 1
    assert math.isnan(c.loc["1d-3d", "ctr"])


def test_daily_series(kpis):
    d = kpis.daily
    assert len(d) == 1
    row = d.iloc[0]
    assert (row.new_items, row.explored_impressions, row.organic_impressions, row.clicks) == (3, 2, 4, 2)


def test_rewards_and_ope_on_tiny_log():
    rewards = join_rewards(DECISIONS, INTERACTIONS)
    assert rewards == {("d1", 0): 1.0, ("d1", 1): 0.0, ("d2", 0): 0.0}
    log = BanditLog.from_decisions(DECISIONS, rewards)
    est = {e.estimator: e.value for e in evaluate(log, [UniformPolicy()], [IPS(), SNIPS()])}
    # weights: d1/0 0.5/0.6, d1/1 1/1, d2/0 (1/3)/0.5; only d1/0 has reward 1
    assert est["ips"] == pytest.approx((0.5 / 0.6) / 3)
    assert est["snips"] == pytest.approx((0.5 / 0.6) / (0.5 / 0.6 + 1 + 2 / 3))


def test_slots_count_as_impressions():
    no_imps = [i for i in INTERACTIONS if i.kind != "impression" or i.decision_id is None]
    data = InMemorySource(ITEMS, DECISIONS, no_imps).load(DAY, at(24))
    plain = compute_kpis(data, CFG).summary
    assert plain.n_impressions == 4
    counted = compute_kpis(data, CFG.model_copy(update={"slots_count_as_impressions": True})).summary
    assert counted.n_impressions == 7 and counted.exploration_share == pytest.approx(3 / 7)


def test_window_validation_names_the_parameter():
    src = InMemorySource(ITEMS, DECISIONS, INTERACTIONS)
    with pytest.raises(InvalidInputError, match=r"^since="):
        src.load(at(24), DAY)
    with pytest.raises(InvalidInputError, match=r"^until="):
        src.load(DAY, datetime(2026, 1, 6))
    with pytest.raises(ValueError, match="cohort_edges_hours"):
        ReportConfig(cohort_edges_hours=(6.0, 1.0))


def test_repeated_slot_events_count_once(kpis):
    """Ten clicks and three impressions on one explored slot change nothing: each (decision, item)
    counts one impression and one click (the raw events stay in the log)."""
    repeats = [ev("A", "click", at(1) + timedelta(minutes=3 + n), "d1", 0) for n in range(9)]
    repeats += [ev("A", "impression", at(1) + timedelta(seconds=n + 1), "d1", 0) for n in range(2)]
    data = InMemorySource(ITEMS, DECISIONS, INTERACTIONS + repeats).load(DAY, at(24), timedelta(minutes=5))
    again = compute_kpis(data, CFG)
    assert again.summary == kpis.summary
    base = InMemorySource(ITEMS, DECISIONS, INTERACTIONS).load(DAY, at(24), timedelta(minutes=5))
    assert len(data.interactions) == len(base.interactions) + len(repeats)  # the raw log keeps them


def test_pacer_counts_one_click_per_slot() -> None:
    from exploration.pacing import ExposurePacer

    pacer = ExposurePacer()
    pacer.register("A", listed_at_s=DAY.timestamp())
    for _ in range(10):
        pacer.record_click("A", key="engagement@d1/A")
    pacer.record_click("A", key="engagement@d2/A")
    exposure = pacer.get("A")
    assert exposure is not None and exposure.clicks == 2
