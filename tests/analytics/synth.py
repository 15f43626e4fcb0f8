"""A small synthetic marketplace with a known reward model, for the analytics tests and the docs
screenshot: items are listed over time, users arrive and a softmax logging policy fills ``k``
exploration slots by sampling without replacement (propensities logged as sampled), impressions and
clicks arrive on the stream. ``mu`` holds each (decision, candidate, position)'s true click
probability, so the true value of any target policy is known exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from coldstart.contracts import Interaction
from coldstart.decisions import Candidate, Decision, Slot

START = datetime(2026, 1, 5, tzinfo=UTC)


@dataclass
class Item:
    item_id: str
    listed_at: datetime
    category: str
    seller_id: str
    vec: np.ndarray
    graduated_at: datetime | None = None


@dataclass
class SimLog:
    items: list[Item]
    decisions: list[Decision]
    interactions: list[Interaction]
    rewards: dict[tuple[str, int], float]
    mu: dict[tuple[str, int, int], float] = field(default_factory=dict)

    def true_value(self, log, policy) -> float:  # type: ignore[no-untyped-def]
        """Exact expected reward per slot of ``policy`` given the logged prefixes (the OPE estimand)."""
        total = 0.0
        for r in range(log.n_rounds):
            d = log.decisions[int(log.decision_index[r])]
            pos = int(log.position[r])
            p = policy.slot_pmf(d, log.available(r))
            total += sum(float(p[i]) * self.mu[(d.decision_id, i, pos)] for i in range(len(d.candidates)))
        return total / log.n_rounds


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def simulate(
    n_items: int = 40,
    n_decisions: int = 300,
    n_candidates: int = 6,
    k: int = 2,
    hours: float = 48.0,
    temperature: float = 1.0,
    floor: float = 0.02,
    organic_impressions: int = 100,
    seed: int = 0,
    start: datetime = START,
) -> SimLog:
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_items):
        listed = start + timedelta(hours=float(rng.uniform(0, hours * 0.6)))
        items.append(
            Item(
                item_id=f"item{i:03d}",
                listed_at=listed,
                category=["shoes", "books", "games"][i % 3],
                seller_id=f"s{i % 5}",
                vec=rng.normal(size=2),
            )
        )
    items.sort(key=lambda it: it.listed_at)
    decisions: list[Decision] = []
    interactions: list[Interaction] = []
    rewards: dict[tuple[str, int], float] = {}
    mu: dict[tuple[str, int, int], float] = {}
    times = sorted(float(t) for t in rng.uniform(hours * 0.1, hours, size=n_decisions))
    n_ev = 0
    for j, t in enumerate(times):
        ts = start + timedelta(hours=t)
        listed = [it for it in items if it.listed_at <= ts]
        if len(listed) < n_candidates:
            continue
        cand_items = [listed[int(i)] for i in rng.choice(len(listed), size=n_candidates, replace=False)]
        u = rng.normal(size=2)
        device = "mobile" if rng.random() < 0.6 else "desktop"
        dots = np.array([float(u @ it.vec) for it in cand_items])
        ages = np.array([(ts - it.listed_at).total_seconds() / 3600 for it in cand_items])
        scores = dots + rng.normal(scale=0.3, size=n_candidates)
        logits = scores / temperature
        pmf = np.exp(logits - logits.max())
        pmf /= pmf.sum()
        pmf = (1 - floor * n_candidates) * pmf + floor
        did = f"d{j:05d}"
        avail = np.ones(n_candidates, dtype=bool)
        slots = []
        for pos in range(k):
            w = np.where(avail, pmf, 0.0)
            w = w / w.sum()
            c = int(rng.choice(n_candidates, p=w))
            slots.append(
                Slot(item_id=cand_items[c].item_id, position=pos, propensity=float(w[c]), score=scores[c])
            )
            avail[c] = False
        for c in range(n_candidates):
            for pos in range(k):
                base = 1.2 * dots[c] - 1.0 + (0.4 if device == "mobile" else -0.2) * cand_items[c].vec[0]
                mu[(did, c, pos)] = _sigmoid(base) * (0.85**pos)
        d = Decision(
            decision_id=did,
            ts=ts,
            user_id=f"u{int(rng.integers(0, 50))}",
            context={"u0": float(u[0]), "u1": float(u[1]), "device": device},
            policy="softmax",
            model_version="sim-1",
            candidates=[
                Candidate(
                    item_id=it.item_id,
                    probability=float(pmf[c]),
                    score=float(scores[c]),
                    features={"dot": float(dots[c]), "age_h": float(ages[c]), "v0": float(it.vec[0])},
                )
                for c, it in enumerate(cand_items)
            ],
            slots=slots,
        )
        decisions.append(d)
        for s in slots:
            c = next(i for i, it in enumerate(cand_items) if it.item_id == s.item_id)
            n_ev += 1
            interactions.append(
                Interaction(
                    event_id=f"e{n_ev}",
                    user_id=d.user_id,
                    item_id=s.item_id,
                    kind="impression",
                    ts=ts + timedelta(seconds=1),
                    decision_id=did,
                    position=s.position,
                )
            )
            clicked = rng.random() < mu[(did, c, s.position)]
            rewards[(did, s.position)] = 1.0 if clicked else 0.0
            if clicked:
                n_ev += 1
                interactions.append(
                    Interaction(
                        event_id=f"e{n_ev}",
                        user_id=d.user_id,
                        item_id=s.item_id,
                        kind="click",
                        ts=ts + timedelta(seconds=float(rng.uniform(2, 60))),
                        decision_id=did,
                        position=s.position,
                    )
                )
    for _ in range(organic_impressions):
        it = items[int(rng.integers(0, len(items)))]
        ts = it.listed_at + timedelta(hours=float(rng.uniform(0, hours)))
        n_ev += 1
        interactions.append(
            Interaction(event_id=f"e{n_ev}", user_id="organic", item_id=it.item_id, kind="impression", ts=ts)
        )
        if rng.random() < 0.1:
            n_ev += 1
            interactions.append(
                Interaction(
                    event_id=f"e{n_ev}",
                    user_id="organic",
                    item_id=it.item_id,
                    kind="click",
                    ts=ts + timedelta(seconds=5),
                )
            )
    interactions.sort(key=lambda e: e.ts)
    return SimLog(items=items, decisions=decisions, interactions=interactions, rewards=rewards, mu=mu)
