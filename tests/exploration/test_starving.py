"""Which starving items a request gets (``ScheduledLedger.most_starving``): the ranking, its head read
from the deadline order, category / seller restrictions, and the ledger's rows kept by listing time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from exploration.pacing import ExposurePacer
from exploration.schedule import HEAD_MIN_SHARE
from tests.exploration.pacing_env import H, make


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


def test_most_starving_is_earliest_deadline_first() -> None:
    p = make(target_impressions=10, window_hours=10)
    p.register("young", listed_at_s=8 * H)  # deadline 18 h
    p.register("old", listed_at_s=1 * H)  # deadline 11 h, well behind
    p.register("older_less_behind", listed_at_s=0.0, impressions=8)  # deadline 10 h, behind by 1
    p.register("closed", listed_at_s=-5 * H)  # window closed at 5 h: after the open ones
    p.register("met", listed_at_s=0.0, impressions=10)  # target reached: never starving
    now = 9 * H
    assert p.most_starving(10, now_s=now) == ["older_less_behind", "old", "young", "closed"]
    assert p.most_starving(2, now_s=now) == ["older_less_behind", "old"]
    by_deficit = make(target_impressions=10, window_hours=10, starving_order="deficit")
    for item_id in ("young", "old", "older_less_behind", "closed", "met"):
        e = p.get(item_id)
        assert e is not None
        by_deficit.register(item_id, e.listed_at_s, impressions=e.impressions)
    assert by_deficit.most_starving(2, now_s=now) == ["closed", "old"]


def test_most_starving_skips_the_served_head_without_ranking_every_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pacing serves the earliest deadlines first, so a run of items at the target grows at the head
    of the deadline order, longer than the first window checked (4 n rows). The answer must still be
    the full ranking's, found without ranking every tracked item (at 1M items that cost ~25 ms)."""
    p = make(target_impressions=5, window_hours=10, schedule_fraction=0.5)
    rng = np.random.default_rng(3)
    listed = rng.uniform(-9 * H, 0.0, 3000)
    for j, t in enumerate(listed):
        p.register(f"i{j}", listed_at_s=float(t))
    now = 0.5 * H
    head = np.argsort(listed + 10 * H, kind="stable")[:1500]
    p.record_impressions([f"i{j}" for j in head.tolist() for _ in range(5)], now_s=now)  # at target
    ranked: list[object] = []
    full = p._ranked
    monkeypatch.setattr(p, "_ranked", lambda *a: ranked.append(a) or full(*a))
    for step in range(60):
        # time goes forward and, in replays, back; some items get served, some requests exclude
        now = float(rng.uniform(0.0, 1.5 * H))
        exclude = {f"i{j}" for j in rng.integers(0, 3000, 5).tolist()}
        n = int(rng.integers(1, 40))
        got = p.most_starving(n, now_s=now, exclude=exclude)
        assert got == full(n, now, None, exclude, True), step
        p.record_impressions(got[: int(rng.integers(0, 4))], now_s=now)
    assert ranked == []


def test_the_starving_head_of_the_deadline_order_equals_the_full_ranking() -> None:
    """most_starving answers from the head of the sorted deadlines when it can: its answer must be the
    full ranking's, with deadline ties (items listed together), exclusions, closed windows, both
    ``only_behind`` modes and a tracked set that changes between calls."""
    rng = np.random.default_rng(11)
    used_head = 0
    for trial in range(40):
        pacer = make(target_impressions=int(rng.integers(5, 60)), window_hours=24.0)
        now = 1_000_000.0
        n_items = int(rng.integers(50, 3000))
        # listing times on a coarse grid: many items share a deadline
        listed = now - rng.integers(0, 40, n_items) * 3600.0 * rng.choice([0.25, 1.0])
        for i in range(n_items):
            pacer.register(f"i{i}", float(listed[i]), impressions=int(rng.integers(0, 40)))
        for step in range(6):
            if step == 3:  # the tracked set changes: the deadline order is rebuilt
                pacer.forget([f"i{i}" for i in rng.choice(n_items, n_items // 5, replace=False)])
                pacer.register("late", now - 1.0)
            n = int(rng.choice([1, 5, 10, 50, 100, 300]))
            exclude = {f"i{i}" for i in rng.choice(n_items, int(rng.integers(0, 30)), replace=False)}
            at = now + float(rng.uniform(0, 3600 * 6))
            behind = bool(rng.random() < 0.7)
            got = pacer.most_starving(n, now_s=at, exclude=exclude, only_behind=behind)
            want = pacer._ranked(n, at, None, exclude, behind)
            assert got == want, (trial, step, n)
            used_head += pacer._starving_head(n, at, exclude, None) is not None
            pacer.record_impressions(got[:5], now_s=at)
    assert used_head >= 60  # the head answered most calls (the rest fell back to the full ranking)


def _reference_starving(
    p: ExposurePacer,
    n: int,
    now: float,
    categories: list[str],
    sellers: list[str],
    exclude: set[str],
    only_behind: bool,
) -> list[str]:
    """most_starving's documented order, item by item from the ledger's public state: open, unmet,
    behind items by deadline, then by larger deficit; the rest after them by larger deficit; ties by
    ledger row."""
    c = p.config
    keyed = []
    for item_id in list(p._index):
        e = p.get(item_id)
        assert e is not None
        if (categories and e.category not in categories) or (sellers and e.seller_id not in sellers):
            continue
        deficit = p.expected_impressions(e, now) - e.impressions
        if item_id in exclude or (only_behind and deficit <= 0):
            continue
        deadline = e.listed_at_s + c.window_hours * H
        open_ = deadline >= now and e.impressions < c.target_impressions and deficit > 0
        keyed.append((deadline if open_ else math.inf, -deficit, p._index[item_id], item_id))
    return [k[-1] for k in sorted(keyed)[:n]]


def test_a_category_or_seller_restriction_ranks_only_its_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request's category / seller filter restricts the starving items by integer codes: the answer
    must be the documented ranking of the matching items alone, for broad filters (answered from the
    head of the deadline order) and narrow ones (ranked directly), codes matched by comparison or
    through a table, after re-labelled and forgotten items too."""
    import exploration.ledger as ledger

    rng = np.random.default_rng(21)
    paths = {"head": 0, "ranked": 0}
    for trial in range(25):
        monkeypatch.setattr(ledger, "_COMPARED_NAMES", 8 if trial % 2 else 0)
        p = make(target_impressions=int(rng.integers(5, 40)), window_hours=24.0)
        now = 1_000_000.0
        n_items = int(rng.integers(200, 3000))
        cats = [f"c{j}" for j in range(int(rng.integers(1, 6)))]
        sellers = [f"s{j}" for j in range(int(rng.integers(20, 300)))]
        listed = now - rng.integers(0, 40, n_items) * 3600.0 * rng.choice([0.25, 1.0])
        for i in range(n_items):
            p.register(
                f"i{i}",
                float(listed[i]),
                category=str(rng.choice(cats)),
                seller_id=str(rng.choice(sellers)),
                impressions=int(rng.integers(0, 30)),
            )
        p.forget([f"i{i}" for i in rng.choice(n_items, n_items // 10, replace=False)])
        p.register("i0", float(listed[0]), category="moved", seller_id="moved")  # a re-labelled item
        for _ in range(6):
            n = int(rng.choice([1, 10, 100]))
            want_cats = [str(c) for c in rng.choice([*cats, "moved", "unknown"], int(rng.integers(0, 3)))]
            want_sellers = [str(s) for s in rng.choice(sellers, int(rng.integers(0, 2)))]
            exclude = {f"i{i}" for i in rng.choice(n_items, int(rng.integers(0, 30)), replace=False)}
            at = now + float(rng.uniform(0, 3600 * 6))
            behind = bool(rng.random() < 0.7)
            got = p.most_starving(
                n, now_s=at, categories=want_cats, sellers=want_sellers, exclude=exclude, only_behind=behind
            )
            assert got == _reference_starving(p, n, at, want_cats, want_sellers, exclude, behind), trial
            allowed = p._allowed(want_cats, want_sellers)
            if allowed is not None:
                few = allowed.sum() <= HEAD_MIN_SHARE * len(p)
                head = None if few else p._starving_head(n, at, exclude, allowed)
                paths["ranked" if head is None else "head"] += 1
            p.record_impressions(got[:3], now_s=at)
    assert min(paths.values()) >= 10, paths  # both ways of answering were checked


def test_rows_by_listing_time_are_kept_sorted_as_items_come_and_go(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger keeps its rows sorted by listing time as items are registered and forgotten (swap
    removal moves the last row into the removed one's): after any interleaving, the kept order holds
    every tracked row once, sorted, with no second full sort (at 1M items one costs 0.1-0.3 s)."""
    rng = np.random.default_rng(8)
    p = make(target_impressions=10, window_hours=10)
    for i in range(500):
        p.register(f"i{i}", float(rng.integers(0, 50)) * H)  # coarse grid: many ties
    p._deadline_order()  # the one full sort
    sorts: list[int] = []
    real_argsort = np.argsort
    monkeypatch.setattr(np, "argsort", lambda a, **kw: sorts.append(len(a)) or real_argsort(a, **kw))
    nxt = 500
    for _ in range(200):
        if rng.random() < 0.5:
            for _ in range(int(rng.integers(1, 20))):
                p.register(f"i{nxt}", float(rng.integers(0, 50)) * H)
                nxt += 1
        else:
            tracked = list(p._index)
            p.forget([tracked[j] for j in rng.choice(len(tracked), int(rng.integers(1, 15)), replace=False)])
        p.register(f"i{int(rng.integers(0, nxt))}", 0.0)  # known or forgotten: either way no full sort
        order, deadlines = p._deadline_order()
        n = len(p)
        assert sorted(order.tolist()) == list(range(n))
        np.testing.assert_array_equal(deadlines, p._listed[order] + 10 * H)
        assert np.all(np.diff(deadlines) >= 0)
    assert all(size <= 20 for size in sorts)  # only the batches merged in were sorted
