"""A replay simulator of cold-item exploration on a real rating timeline (the role of obp's
``simulator/``): does a policy give new items their impressions, and do they get clicks?

Time runs in *arrivals*: every ``stride``-th rating event of the timeline is one user arrival; an item
is listed at the arrival of its first rating and stays cold until it graduates. The reward of a slot
is 1 when the user rated that item >= 4 anywhere in the data set (the full rating matrix is the
ground truth, so any policy can be scored, unlike rejection-sampling replay, which needs uniformly
random logs). A user's vector is the mean of the vectors of the items the user liked *before* the
arrival.

:func:`simulate` drives :class:`~exploration.service.SlotService` in this process (no Kafka, no HTTP,
learning after every arrival); ``benchmarks/replay.py`` drives the running stack with the same
timeline and scores both with :class:`ColdMetrics`. :func:`feasibility` says whether the traffic can
meet the coverage goal at all.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from exploration.config import PacingConfig, PolicyConfig, UniformPolicyConfig
from exploration.model_store import PolicyHolder
from exploration.pacing import ExposurePacer
from exploration.policies import build_policy, learn_decision
from exploration.pool import PoolEntry, build_pool
from exploration.service import SlotRequest, SlotService
from feature_repo.base import UserStore
from feature_repo.records import StoredUser

HOUR = 3600.0

#: ``(user_id, item_id, rating)`` in time order.
RatingEvent = tuple[str, str, float]


@dataclass(frozen=True)
class ReplayConfig:
    """The protocol: arrivals, slots per arrival, the coverage goal and graduation (in arrivals)."""

    stride: int = 10
    k: int = 5
    n_impressions: int = 5  # coverage goal N
    window: float = 1000.0  # coverage window T, arrivals
    graduate_impressions: int = 20
    max_age: float = 1500.0  # items age out after this many arrivals
    starving: int = 20  # candidate places for starving items (paced policies)
    seed: int = 0
    pacing_strength: Mapping[str, Any] | None = None  # PacingConfig strength fields (None: adaptive)


@dataclass(frozen=True)
class PolicySpec:
    """A policy of the comparison; ``policy=None``: the most liked warm items, no exploration."""

    name: str
    policy: PolicyConfig | None
    m: int
    pacing: bool


class ReplayUsers(UserStore):
    """User vectors of the replay: the running mean of liked items' vectors (in memory)."""

    def __init__(self) -> None:
        self.sums: dict[str, NDArray[np.float64]] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def like(self, user_id: str, vec: NDArray[np.floating]) -> None:
        """The user liked an item with vector ``vec``."""
        self.sums[user_id] = self.sums.get(user_id, np.zeros(vec.shape[0])) + vec
        self.counts[user_id] += 1

    def write_users(self, users: Sequence[StoredUser]) -> None:
        """An explicit vector replaces the running mean."""
        for u in users:
            self.sums[u.user_id] = np.asarray(u.vector, dtype=np.float64) * max(1, u.interactions)
            self.counts[u.user_id] = max(1, u.interactions)

    def get_users(self, user_ids: Sequence[str]) -> dict[str, StoredUser]:
        """Users with at least one like."""
        out = {}
        for u in user_ids:
            if u in self.sums:
                v = self.sums[u] / self.counts[u]
                out[u] = StoredUser(u, v.astype(np.float32), self.counts[u], "replay", datetime.now(UTC))
        return out


class ColdMetrics:
    """Cold impressions and clicks of one run, in arrivals."""

    def __init__(self) -> None:
        self.first_arrival: dict[str, int] = {}
        self.impressions: dict[str, list[int]] = defaultdict(list)
        self.first_click: dict[str, int] = {}
        self.cold_imps = 0
        self.cold_clicks = 0
        self.warm_reward = 0.0
        self.short_decisions = 0  # arrivals served fewer than k slots
        self.missing_slots = 0
        self.last_short_arrival = 0

    def decision(self, n_slots: int, k: int, arrival: int) -> None:
        """An arrival got ``n_slots`` of the ``k`` slots asked."""
        if n_slots < k:
            self.short_decisions += 1
            self.missing_slots += k - n_slots
            self.last_short_arrival = arrival

    def impression(self, item: str, arrival: int, reward: bool) -> None:
        """A cold item was shown at ``arrival``; ``reward``: the user liked it."""
        self.impressions[item].append(arrival)
        self.cold_imps += 1
        self.cold_clicks += int(reward)
        if reward and item not in self.first_click:
            self.first_click[item] = arrival

    def row(self, name: str, arrivals: int, cfg: ReplayConfig) -> dict[str, Any]:
        """The run's scores: cold CTR, coverage (items listed a full window before the end with at
        least ``n_impressions`` impressions inside it), median time to first click."""
        fa = self.first_arrival
        eligible = [i for i, a in fa.items() if a + cfg.window <= arrivals]
        covered = sum(
            1
            for i in eligible
            if sum(1 for t in self.impressions.get(i, []) if t - fa[i] <= cfg.window) >= cfg.n_impressions
        )
        ttfc = [self.first_click[i] - fa[i] for i in self.first_click]
        return {
            "policy": name,
            "cold_ctr": round(self.cold_clicks / self.cold_imps, 5) if self.cold_imps else 0.0,
            "coverage": round(covered / len(eligible), 4) if eligible else 0.0,
            "median_time_to_first_click": float(np.median(ttfc)) if ttfc else None,
            "cumulative_reward": float(self.cold_clicks) + self.warm_reward,
            "cold_impressions": self.cold_imps,
            "items_clicked": len(self.first_click),
            "eligible_items": len(eligible),
            "short_decisions": self.short_decisions,
            "missing_slots": self.missing_slots,
            "last_short_arrival": self.last_short_arrival,
        }


def pacing_config(spec: PolicySpec, cfg: ReplayConfig, hours_per_arrival: float = 1.0) -> PacingConfig:
    """The pacing of a policy, its windows converted from arrivals to the pacer's hours (in
    :func:`simulate` an arrival is one hour of the pacer's clock)."""
    strength = dict(cfg.pacing_strength or {}) if spec.pacing else {"strength": 0.0}
    return PacingConfig(
        target_impressions=cfg.n_impressions,
        window_hours=cfg.window * hours_per_arrival,
        max_boost=4.0 if spec.pacing else 1.0,
        graduate_impressions=cfg.graduate_impressions,
        graduate_clicks=1,
        max_age_hours=cfg.max_age * hours_per_arrival,
        **strength,
    )


def simulate(
    spec: PolicySpec,
    events: Sequence[RatingEvent],
    vectors: Mapping[str, NDArray[np.float32]],
    liked: Mapping[str, set[str]],
    cfg: ReplayConfig,
) -> dict[str, Any]:
    """One policy over the timeline in this process; the policy learns after every arrival."""
    clock = {"t": 0.0}
    users = ReplayUsers()
    svc = SlotService(
        pool=build_pool(),
        users=users,
        holder=PolicyHolder(build_policy(spec.policy or UniformPolicyConfig(), seed=cfg.seed)),
        pacer=ExposurePacer(pacing_config(spec, cfg), clock=lambda: clock["t"]),
        candidates_m=spec.m,
        starving_candidates=cfg.starving if spec.pacing else 0,
        clock=lambda: clock["t"],
    )
    m = ColdMetrics()
    popularity: dict[str, int] = defaultdict(int)
    strengths: list[float] = []
    arrival = 0
    for n, (user, item, value) in enumerate(events):
        if item not in m.first_arrival and item in vectors:
            m.first_arrival[item] = arrival
            svc.add_items([PoolEntry(item, vectors[item], listed_at_s=clock["t"])])
        if value >= 4.0 and item in vectors:
            users.like(user, vectors[item])
            popularity[item] += 1
        if n % cfg.stride:
            continue
        arrival += 1
        clock["t"] = arrival * HOUR
        if spec.policy is None:  # popular warm items: no cold impressions at all
            if arrival % 20 == 0:
                svc.graduate()  # without impressions, items leave the cold pool by age only
            ranked = sorted(popularity, key=lambda i: -popularity[i])
            warm = [i for i in ranked if i not in svc.pacer][: cfg.k]
            m.warm_reward += sum(1.0 for i in warm if i in liked.get(user, ()))
            continue
        res = svc.select(
            SlotRequest(user_id=user, k=cfg.k, context={"n_liked": float(users.counts.get(user, 0))})
        )
        m.decision(len(res.decision.slots), cfg.k, arrival)
        rewards = {}
        for s in res.decision.slots:
            r = s.item_id in liked.get(user, ())
            rewards[s.item_id] = float(r)
            m.impression(s.item_id, arrival, r)
            if r:
                svc.pacer.record_click(s.item_id)
        learn_decision(svc.holder.current.policy, res.decision, rewards)
        if spec.pacing:
            strengths.append(svc.pacer.strength())
        if arrival % 20 == 0:
            svc.graduate()
    row = m.row(spec.name, arrival, cfg)
    # mean pacing strength per fifth of the timeline (paced policies)
    row["strength_by_fifth"] = [round(float(np.mean(c)), 3) for c in np.array_split(strengths, 5) if len(c)]
    return row


def feasibility(events: Sequence[RatingEvent], listed_items: set[str], cfg: ReplayConfig) -> dict[str, Any]:
    """Can the traffic meet the goal? Slots per new item, and the coverage of an oracle that ignores
    users and gives each arrival's ``k`` slots earliest-deadline-first to unmet items."""
    listed: dict[str, int] = {}
    imps: dict[str, int] = {}
    heap: list[tuple[int, str]] = []
    arrival = 0
    for n, (_, item, _) in enumerate(events):
        if item not in listed and item in listed_items:
            listed[item] = arrival + 1
            imps[item] = 0
            heapq.heappush(heap, (arrival + 1 + int(cfg.window), item))
        if n % cfg.stride:
            continue
        arrival += 1
        chosen: list[tuple[int, str]] = []
        while heap and len(chosen) < cfg.k:
            deadline, it = heapq.heappop(heap)
            if deadline >= arrival:
                chosen.append((deadline, it))
        for deadline, it in chosen:
            imps[it] += 1
            if imps[it] < cfg.n_impressions:
                heapq.heappush(heap, (deadline, it))
    starts = np.array(sorted(listed.values()))
    window_slots = [  # items listed within one window of an item's listing share that window's slots
        int(np.searchsorted(starts, a + cfg.window) - np.searchsorted(starts, a)) for a in starts
    ]
    eligible = [i for i, a in listed.items() if a + cfg.window <= arrival]
    return {
        "new_items": len(listed),
        "arrivals": arrival,
        "demand_over_supply": round(len(listed) * cfg.n_impressions / max(arrival * cfg.k, 1), 3),
        "slots_per_item_within_T_median": round(
            float(np.median([cfg.k * cfg.window / max(1, c) for c in window_slots])), 2
        )
        if window_slots
        else None,
        "edf_oracle_coverage": (
            round(sum(imps[i] >= cfg.n_impressions for i in eligible) / len(eligible), 4)
            if eligible
            else None
        ),
    }
