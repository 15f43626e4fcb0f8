"""The replay simulator (exploration/simulator.py) on a small synthetic timeline: scores are
consistent, the earliest-deadline oracle bounds what is feasible, pacing reaches the coverage goal
when the traffic allows it, and the no-exploration baseline shows no cold item."""

from __future__ import annotations

import numpy as np
import pytest

from exploration.config import UniformPolicyConfig, VWPolicyConfig
from exploration.simulator import PolicySpec, RatingEvent, ReplayConfig, feasibility, simulate


def _timeline(
    n_items: int = 40, n_users: int = 60, n_events: int = 3000, seed: int = 0
) -> tuple[list[RatingEvent], dict[str, np.ndarray], dict[str, set[str]]]:
    rng = np.random.default_rng(seed)
    vectors = {f"i{j}": rng.standard_normal(8).astype(np.float32) for j in range(n_items)}
    taste = rng.standard_normal((n_users, 8))
    # items appear one after another over the first half of the timeline, then stay rated
    born = np.sort(rng.integers(0, n_events // 2, n_items))
    events: list[RatingEvent] = []
    for t in range(n_events):
        alive = np.flatnonzero(born <= t)
        j = int(rng.choice(alive)) if alive.size else 0
        u = int(rng.integers(n_users))
        score = float(taste[u] @ vectors[f"i{j}"])
        events.append((f"u{u}", f"i{j}", 5.0 if score > 0.5 else 2.0))
    liked: dict[str, set[str]] = {}
    for u, i, v in events:
        if v >= 4.0:
            liked.setdefault(u, set()).add(i)
    return events, vectors, liked


CFG = ReplayConfig(stride=2, k=3, n_impressions=4, window=200, graduate_impressions=10, max_age=400)


@pytest.fixture(scope="module")
def timeline() -> tuple[list[RatingEvent], dict[str, np.ndarray], dict[str, set[str]]]:
    return _timeline()


def test_scores_are_consistent_and_pacing_meets_a_feasible_goal(
    timeline: tuple[list[RatingEvent], dict[str, np.ndarray], dict[str, set[str]]],
) -> None:
    events, vectors, liked = timeline
    oracle = feasibility(events, set(vectors), CFG)
    assert oracle["new_items"] == 40 and oracle["arrivals"] == 1500
    assert oracle["edf_oracle_coverage"] == 1.0  # the traffic allows the goal
    uniform = simulate(PolicySpec("uniform", UniformPolicyConfig(), 100, False), events, vectors, liked, CFG)
    ours = simulate(PolicySpec("ours", VWPolicyConfig(), 100, True), events, vectors, liked, CFG)
    for row in (uniform, ours):
        assert 0.0 <= row["coverage"] <= oracle["edf_oracle_coverage"]
        assert row["cold_impressions"] + row["missing_slots"] == CFG.k * oracle["arrivals"]
        assert row["items_clicked"] <= 40 and 0.0 < row["cold_ctr"] <= 1.0
    assert ours["coverage"] >= 0.9
    assert len(ours["strength_by_fifth"]) == 5 and uniform["strength_by_fifth"] == []


def test_the_warm_baseline_shows_no_cold_item(
    timeline: tuple[list[RatingEvent], dict[str, np.ndarray], dict[str, set[str]]],
) -> None:
    events, vectors, liked = timeline
    row = simulate(PolicySpec("popular_warm", None, 100, False), events, vectors, liked, CFG)
    assert row["cold_impressions"] == 0 and row["coverage"] == 0.0
    assert row["cumulative_reward"] > 0  # it still recommends liked warm items
