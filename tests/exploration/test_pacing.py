"""Exposure pacing: schedule, boosts of starving items, graduation."""

from __future__ import annotations

import numpy as np
import pytest

from exploration.config import PacingConfig
from exploration.pacing import ExposurePacer

H = 3600.0


def make(**kw: object) -> ExposurePacer:
    cfg = PacingConfig(
        **{
            "target_impressions": 100,
            "window_hours": 10,
            "max_boost": 5.0,
            "schedule_fraction": 1.0,
            "full_boost_deficit": 1.0,
            **kw,
        }
    )  # type: ignore[arg-type]
    return ExposurePacer(cfg, clock=lambda: 0.0)


def test_starving_items_are_boosted_in_proportion_to_their_deficit() -> None:
    p = make()
    p.register("fresh", listed_at_s=0.0)
    p.register("behind", listed_at_s=0.0)
    p.register("on_track", listed_at_s=0.0, impressions=60)
    p.register("half", listed_at_s=0.0, impressions=25)
    now = 5 * H  # schedule: 50 impressions
    b = p.boosts(["behind", "on_track", "half", "unknown"], now_s=now)
    assert b[0] == pytest.approx(5.0)  # nothing yet: full boost
    assert b[1] == pytest.approx(1.0)  # ahead of schedule
    assert b[2] == pytest.approx(1 + 4 * 0.5)  # half the expected impressions
    assert b[3] == 1.0
    assert p.boosts(["fresh"], now_s=0.0)[0] == pytest.approx(1.0)  # at listing nothing is expected yet


def test_most_starving_orders_by_deficit_and_filters() -> None:
    p = make()
    for i, imps in enumerate([0, 10, 80, 40]):
        p.register(f"i{i}", listed_at_s=0.0, impressions=imps, seller_id="a" if i % 2 else "b")
    now = 5 * H
    assert p.most_starving(10, now_s=now) == ["i0", "i1", "i3"]
    assert p.most_starving(10, now_s=now, sellers=["a"]) == ["i1", "i3"]
    assert p.most_starving(10, now_s=now, exclude={"i0"}) == ["i1", "i3"]
    assert p.most_starving(10, now_s=now, only_behind=False) == ["i0", "i1", "i3", "i2"]
    p.record_impressions(["i0"] * 45)
    assert p.most_starving(1, now_s=now) == ["i1"]


def test_graduation_by_evidence_and_age() -> None:
    p = make(graduate_impressions=50, graduate_clicks=2, max_age_hours=24)
    p.register("proven", listed_at_s=0.0, impressions=60)
    p.register("no_clicks", listed_at_s=0.0, impressions=60)
    p.register("old", listed_at_s=-30 * H)
    p.record_click("proven", 2)
    events = p.graduations(now_s=H)
    assert {(e.item_id, e.reason) for e in events} == {("proven", "evidence"), ("old", "aged_out")}
    assert "proven" not in p and "old" not in p and "no_clicks" in p
    assert p.graduations(now_s=H) == []


def test_pacing_reaches_coverage_for_items_no_user_prefers() -> None:
    """With the service's starving reservation, every item reaches its target even when a popular
    subset would otherwise absorb all impressions (simulated: 1 slot per request, the policy
    preferring the popular items 5:1)."""
    p = make(
        target_impressions=20, window_hours=1, max_boost=8.0, schedule_fraction=0.8, full_boost_deficit=0.25
    )
    for i in range(30):
        p.register(f"i{i}", listed_at_s=0.0)
    rng = np.random.default_rng(0)
    for step in range(2400):
        now = step * 1.5  # 2400 requests over the one-hour window
        popular = [f"i{j}" for j in range(5)]
        starving = [s for s in p.most_starving(3, now_s=now) if s not in popular]
        cands = popular + starving
        w = p.boosts(cands, now_s=now) * np.array([1.0] * len(popular) + [0.2] * len(starving))
        pick = cands[int(rng.choice(len(cands), p=w / w.sum()))]
        p.record_impressions([pick])
    counts = [p.get(f"i{i}").impressions for i in range(5, 30)]  # type: ignore[union-attr]
    assert min(counts) >= 20, counts
