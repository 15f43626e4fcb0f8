"""Exposure pacing: schedule, boosts of starving items, graduation."""

from __future__ import annotations

import numpy as np
import pytest

from exploration.config import GreedyPolicyConfig, PacingConfig, VWPolicyConfig
from exploration.pacing import ExposurePacer
from exploration.policies import Arm, build_policy
from tests.exploration.pacing_env import H, make


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


def test_graduations_are_those_of_a_check_of_every_item() -> None:
    """graduations() finds the items with evidence from flags set as counters grew and the aged ones
    from the rows sorted by listing: after any mix of registrations (with seeded counters),
    impressions, clicks, forgotten items and time, its events must be those of checking every tracked
    item, in the same order (descending row)."""
    rng = np.random.default_rng(8)
    for trial in range(30):
        p = make(
            graduate_impressions=int(rng.integers(0, 20)),
            graduate_clicks=int(rng.integers(0, 4)),
            max_age_hours=float(rng.uniform(1, 30)),
        )
        c = p.config
        now, born = 0.0, 0
        for step in range(12):
            for _ in range(int(rng.integers(0, 60))):
                p.register(
                    f"i{born}",
                    now - float(rng.uniform(0, 40)) * H,
                    impressions=int(rng.integers(0, 25)) if rng.random() < 0.3 else 0,
                    clicks=int(rng.integers(0, 5)) if rng.random() < 0.3 else 0,
                )
                born += 1
            tracked = list(p._index)
            if tracked:
                p.record_impressions(
                    [str(i) for i in rng.choice(tracked, int(rng.integers(0, 200)))], now_s=now
                )
                for item_id in rng.choice(tracked, int(rng.integers(0, 20))):
                    p.record_click(str(item_id))
                p.forget([str(i) for i in rng.choice(tracked, int(rng.integers(0, 10)))])
            now += float(rng.uniform(0, 4)) * H
            want = []
            for item_id, _row in sorted(p._index.items(), key=lambda kv: -kv[1]):
                e = p.get(item_id)
                assert e is not None
                evidence = e.impressions >= c.graduate_impressions and e.clicks >= c.graduate_clicks
                if evidence or now - e.listed_at_s > c.max_age_hours * H:
                    want.append((item_id, "evidence" if evidence else "aged_out", e.impressions, e.clicks))
            got = [(e.item_id, e.reason, e.impressions, e.clicks) for e in p.graduations(now_s=now)]
            assert got == want, (trial, step)
            assert not any(item_id in p for item_id, *_ in got)


def test_on_schedule_share_counts_every_row_across_its_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The share is counted a chunk of rows at a time (the lock let go between chunks): with chunks
    smaller than the ledger it must still count every item once."""
    import exploration.pacing as pacing

    monkeypatch.setattr(pacing, "ROWS_PER_HOLD", 7)
    p = make(target_impressions=10, window_hours=10, schedule_fraction=1.0)
    for i in range(50):
        p.register(f"i{i}", listed_at_s=-5 * H, impressions=5 if i < 20 else 4)  # expected: 5
    assert p.on_schedule_share(now_s=0.0) == pytest.approx(20 / 50)
    assert make().on_schedule_share() == 1.0


def test_a_refreshed_strength_is_what_requests_read_without_recomputing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """refresh_strength() (the replica's maintenance loop) keeps the strength that strength() (a
    request) returns: a request within the refresh period must not pass over the items itself."""
    clock = {"t": 0.0}
    p = ExposurePacer(PacingConfig(target_impressions=20, window_hours=10.0), clock=lambda: clock["t"])
    _steady_supply(p, 50, 0.5, clock)
    for i in range(30):
        p.register(f"i{i}", clock["t"] - i * 600.0)
    value = p.refresh_strength()
    loads: list[float] = []
    real = p._load
    monkeypatch.setattr(p, "_load", lambda now: loads.append(now) or real(now))
    clock["t"] += 1.0
    assert p.strength() == value and loads == []
    clock["t"] += 10.0 * H  # past the refresh period: the request recomputes it
    p.strength()
    assert loads == [clock["t"]]


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


# --------------------------------------------------------------------------- deadline-aware pacing


def test_urgency_is_needed_impressions_per_hour_left() -> None:
    p = make(target_impressions=10, window_hours=10)
    p.register("behind", listed_at_s=0.0, impressions=2)
    p.register("on_track", listed_at_s=0.0, impressions=6)
    p.register("closed", listed_at_s=-20 * H)
    u = p.urgency(["behind", "on_track", "closed", "unknown"], now_s=5 * H)
    assert u[0] == pytest.approx(8 / 5)  # 8 more impressions in the 5 hours left
    assert list(u[1:]) == [0.0, 0.0, 0.0]


def _arms(n: int, groups: list[str] | None = None) -> list[Arm]:
    return [Arm(f"i{j}", {"dot": float(n - j)}, (groups or [""] * n)[j]) for j in range(n)]


def test_paced_choice_logs_the_mixture_probability_it_sampled_from() -> None:
    p = make(target_impressions=10, window_hours=10, strength=0.6, urgency_power=2.0)
    arms = _arms(6)
    for j in range(6):
        p.register(f"i{j}", listed_at_s=0.0, impressions=10 if j < 4 else 0)  # i4, i5 starving
    p.register("i5", 0.0)
    p.record_impressions(["i5"] * 3)  # i5: 7 needed, i4: 10 needed -> q ~ (10 / 5, 7 / 5) ** 2
    now = 5 * H
    policy = build_policy(GreedyPolicyConfig(min_propensity=0.01), seed=1)
    base, _ = policy.pmf({}, arms)
    q = np.array([0, 0, 0, 0, 10 / 5, 7 / 5]) ** 2
    first = 0.4 * base + 0.6 * q / q.sum()
    counts = np.zeros(6)
    for _ in range(3000):
        choice = p.choose(policy, {}, arms, 3, now_s=now)
        np.testing.assert_allclose(choice.pmf, first, rtol=1e-9)
        assert choice.pmf.sum() == pytest.approx(1.0)
        eligible = np.ones(6, dtype=bool)
        for slot in choice.slots:  # recompute every position's distribution from the earlier draws
            pw = np.where(eligible, base, 0.0)
            qw = np.where(eligible, q, 0.0)
            w = 0.4 * pw / pw.sum() + (0.6 * qw / qw.sum() if qw.sum() > 0 else 0.0 * qw)
            w = w / w.sum()
            assert slot.propensity == pytest.approx(w[slot.index], rel=1e-9)
            eligible[slot.index] = False
        assert len({s.item_id for s in choice.slots}) == 3
        counts[choice.slots[0].index] += 1
    np.testing.assert_allclose(counts / counts.sum(), first, atol=0.03)  # the logged pmf is what happened


def test_paced_choice_without_urgent_items_is_the_policy_choice() -> None:
    p = make(target_impressions=10, window_hours=10, strength=0.5)
    arms = _arms(5)
    for j in range(5):
        p.register(f"i{j}", listed_at_s=0.0, impressions=10)  # all at target: nothing urgent
    a = build_policy(VWPolicyConfig(bits=16), seed=4)
    b = build_policy(VWPolicyConfig(bits=16), seed=4)
    for _ in range(20):
        x = p.choose(a, {"c": 1.0}, arms, 2, now_s=5 * H)
        y = b.choose({"c": 1.0}, arms, 2)
        assert [(s.item_id, s.propensity) for s in x.slots] == [(s.item_id, s.propensity) for s in y.slots]


def test_paced_choice_honours_the_per_seller_cap() -> None:
    p = make(target_impressions=10, window_hours=10, strength=0.9)
    groups = ["s1", "s1", "s1", "s2", "s3"]
    arms = _arms(5, groups)
    for j in range(5):
        p.register(f"i{j}", listed_at_s=0.0, seller_id=groups[j])  # every item starving
    policy = build_policy(GreedyPolicyConfig(), seed=0)
    for _ in range(200):
        choice = p.choose(policy, {}, arms, 4, max_per_group=1, now_s=5 * H)
        sellers = [groups[s.index] for s in choice.slots]
        assert len(sellers) == len(set(sellers)) == 3  # three sellers: three slots at most


def _simulate_coverage(strength: float | None, max_boost: float) -> float:
    """A greedy policy that always prefers 5 evergreen items; 30 new items listed over 10 h, a goal of
    10 impressions within 4 h each; 2 slots per request, 300 requests per hour (traffic: enough)."""
    p = make(
        target_impressions=10,
        window_hours=4,
        max_boost=max_boost,
        strength=strength,
        schedule_fraction=0.8,
        full_boost_deficit=0.25,
    )
    policy = build_policy(GreedyPolicyConfig(min_propensity=1e-3), seed=0)
    popular = [f"pop{j}" for j in range(5)]
    for item_id in popular:
        p.register(item_id, listed_at_s=-100 * H, impressions=10)  # old, at target
    served: dict[str, list[float]] = {}
    listed: dict[str, float] = {}
    for step in range(14 * 300):
        now = step * H / 300
        n_listed = min(30, int(now / (H / 3)) + 1)  # one new item every 20 minutes
        for j in range(len(listed), n_listed):
            listed[f"new{j}"] = now
            p.register(f"new{j}", listed_at_s=now)
        starving = [s for s in p.most_starving(3, now_s=now) if s not in popular]
        ids = popular + starving
        arms = [Arm(i, {"dot": 1.0 if i in popular else 0.1}) for i in ids]
        choice = p.choose(policy, {}, arms, 2, boosts=p.boosts(ids, now_s=now), now_s=now)
        for s in choice.slots:
            served.setdefault(s.item_id, []).append(now)
        p.record_impressions(s.item_id for s in choice.slots)
    met = [
        sum(1 for t in served.get(i, []) if t - at <= 4 * H) >= 10
        for i, at in listed.items()
        if at + 4 * H <= now
    ]
    return sum(met) / len(met)


def test_pacing_delivers_the_goal_when_traffic_allows_and_boosts_alone_do_not() -> None:
    assert _simulate_coverage(strength=0.5, max_boost=4.0) == 1.0
    assert _simulate_coverage(strength=None, max_boost=4.0) == 1.0  # adaptive strength
    assert _simulate_coverage(strength=0.0, max_boost=4.0) < 0.5  # multiplicative boosts of ~0 stay ~0


def _steady_supply(p: ExposurePacer, per_hour: int, hours: float, clock: dict[str, float]) -> None:
    """Serve ``per_hour`` impressions per hour (of an untracked item) for ``hours``, one per step."""
    steps = int(per_hour * hours)
    for _ in range(steps):
        clock["t"] += H / per_hour
        p.record_impressions(["warm"])


def test_supply_estimate_follows_the_served_rate() -> None:
    clock = {"t": 0.0}
    p = ExposurePacer(PacingConfig(window_hours=10, supply_halflife=0.02), clock=lambda: clock["t"])
    assert p.supply_per_hour() is None
    _steady_supply(p, 60, 2.0, clock)
    assert p.supply_per_hour() == pytest.approx(60.0, rel=0.05)
    _steady_supply(p, 240, 2.0, clock)  # 10 half-lives (0.2 h each) later the old rate is forgotten
    assert p.supply_per_hour() == pytest.approx(240.0, rel=0.05)


def test_adaptive_strength_rises_with_the_backlog_and_falls_to_the_floor_without_one() -> None:
    clock = {"t": 0.0}
    cfg = PacingConfig(
        target_impressions=10, window_hours=10, min_strength=0.05, max_strength=0.9, safety=1.5
    )
    p = ExposurePacer(cfg, clock=lambda: clock["t"])
    _steady_supply(p, 100, 1.0, clock)  # 100 slots per hour
    assert p.load() == 0.0
    assert p.strength() == pytest.approx(0.05)  # nothing to pace: the floor
    listed = clock["t"]
    for j in range(20):
        p.register(f"a{j}", listed_at_s=listed)
    clock["t"] += 60.0  # past the strength cache
    # 20 items x 10 impressions within ~10 h at 100 slots / h: load ~ 200 / 1000
    load = p.load()
    assert load == pytest.approx(200 / (100 * (10 - 60 / H)), rel=0.05)
    assert p.strength() == pytest.approx(1.5 * load, rel=1e-9)
    low = p.strength()
    for j in range(200):
        p.register(f"b{j}", listed_at_s=listed)
    clock["t"] += 60.0
    assert p.load() > 1.0  # 2,200 impressions needed, ~1,000 slots: more than the supply
    assert p.strength() == pytest.approx(0.9)  # the ceiling
    assert p.strength() > low
    # the backlog is served: every item reaches the target, the strength falls back to the floor
    p.record_impressions([f"{x}{j}" for x in "ab" for j in range(200 if x == "b" else 20)] * 10)
    clock["t"] += 60.0
    assert p.load() == 0.0
    assert p.strength() == pytest.approx(0.05)
    # items whose window closed do not count
    p.register("late", listed_at_s=clock["t"] - 11 * H)
    clock["t"] += 60.0
    assert p.strength() == pytest.approx(0.05)


def test_adaptive_choice_logs_the_mixture_probability_it_sampled_from() -> None:
    clock = {"t": 0.0}
    cfg = PacingConfig(target_impressions=10, window_hours=10, min_strength=0.0, max_strength=1.0, safety=10)
    p = ExposurePacer(cfg, clock=lambda: clock["t"], seed=3)
    _steady_supply(p, 100, 1.0, clock)
    arms = _arms(6)
    for j in range(6):
        p.register(f"i{j}", listed_at_s=clock["t"] - 5 * H, impressions=10 if j < 4 else 3)
    policy = build_policy(GreedyPolicyConfig(min_propensity=0.01), seed=1)
    base, _ = policy.pmf({}, arms)
    lam = p.strength()
    assert lam == pytest.approx(10 * 14 / 500, rel=0.05)  # 14 impressions needed in 5 h at 100 slots / h
    q = np.array([0, 0, 0, 0, 1, 1], dtype=float)
    for _ in range(200):
        choice = p.choose(policy, {}, arms, 2)
        np.testing.assert_allclose(choice.pmf, (1 - lam) * base + lam * q / q.sum(), rtol=1e-9)
        first = choice.slots[0]
        assert first.propensity == pytest.approx(choice.pmf[first.index], rel=1e-9)


def test_strength_range_is_validated_naming_the_fields() -> None:
    with pytest.raises(ValueError, match="min_strength"):
        PacingConfig(min_strength=0.8, max_strength=0.5)
    with pytest.raises(ValueError, match="safety"):
        PacingConfig(safety=0.0)


@pytest.mark.parametrize("rows_per_hold", [65_536, 7])
def test_load_is_the_edf_demand_bound_over_the_open_unmet_items(
    rows_per_hold: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load() reads the deadline order the starving ranking keeps, a chunk of rows per hold of the
    lock: it must equal the EDF demand bound computed from scratch, with deadline ties, met items,
    closed windows and forgotten items, whatever the chunk."""
    import exploration.pacing as pacing
    from exploration.pacing import HORIZON_FLOOR

    monkeypatch.setattr(pacing, "ROWS_PER_HOLD", rows_per_hold)
    rng = np.random.default_rng(5)
    clock = {"t": 0.0}
    for _ in range(20):
        clock["t"] = 0.0
        target, window = int(rng.integers(3, 30)), 10.0
        p = ExposurePacer(
            PacingConfig(target_impressions=target, window_hours=window), clock=lambda: clock["t"]
        )
        _steady_supply(p, int(rng.integers(20, 200)), 0.5, clock)
        now = clock["t"]
        n_items = int(rng.integers(1, 400))
        listed = now - rng.integers(0, 14, n_items) * 3600.0  # whole hours: ties; some windows closed
        imps = rng.integers(0, 2 * target, n_items)
        for i in range(n_items):
            p.register(f"i{i}", float(listed[i]), impressions=int(imps[i]))
        gone = rng.choice(n_items, n_items // 4, replace=False)
        p.forget([f"i{i}" for i in gone])
        keep = np.setdiff1d(np.arange(n_items), gone)
        deadline, need = listed[keep] + window * H, target - imps[keep]
        open_ = (deadline >= now) & (need > 0)
        supply = p.supply_per_hour(now)
        assert supply is not None
        if not open_.any():
            assert p.load() == 0.0
            continue
        order = np.argsort(deadline[open_])
        cum = np.cumsum(need[open_][order])
        hours = np.maximum(deadline[open_][order] - now, HORIZON_FLOOR * window * H) / H
        assert p.load() == pytest.approx(float(np.max(cum / (supply * hours))), rel=1e-12)
