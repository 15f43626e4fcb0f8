"""Joining interactions to decisions online: the rewards the learner learns from.

The reward of a slot is the largest ``RewardConfig.by_kind[kind]`` over the interactions with that
slot's item that carry the decision's ``decision_id`` and happen within ``window_s`` of the decision
(kinds not in ``by_kind`` are ignored), and ``default_reward`` when the window closes without one --
the same rule as the offline join (:func:`exploration.ope.log.join_rewards`), so online learning and
off-policy evaluation agree.

A slot is *final* as soon as its reward reaches the largest configured reward (nothing can raise it:
it is learned within seconds of the click) or when the decision's window closes. Interactions that
arrive before their decision (the two topics are not ordered with each other) wait up to one window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from coldstart.decisions import Decision
from exploration.config import RewardConfig
from feature_repo.records import InteractionLike


@dataclass(frozen=True)
class SlotReward:
    """A final reward of one slot of one decision."""

    decision: Decision
    position: int
    item_id: str
    reward: float
    closed_by: Literal["max_reward", "window"]


@dataclass
class _Pending:
    decision: Decision
    deadline_s: float
    best: dict[int, float] = field(default_factory=dict)  # position -> best reward so far
    final: set[int] = field(default_factory=set)
    seen_events: set[str] = field(default_factory=set)


class RewardJoiner:
    """In-memory decision↔interaction join with a reward window (thread-safe).

    Parameters
    ----------
    config
        Window, reward per kind, default reward.
    clock
        Current time in epoch seconds; windows close at ``decision.ts + window_s`` on this clock.
    max_pending
        Safety cap on open decisions; the oldest are closed early (with their rewards so far).
    """

    def __init__(
        self,
        config: RewardConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        max_pending: int = 1_000_000,
    ) -> None:
        self.config = config or RewardConfig()
        self.clock = clock
        self.max_pending = max_pending
        self._pending: dict[str, _Pending] = {}
        self._orphans: dict[str, list[tuple[float, InteractionLike]]] = {}
        self._closed: dict[str, float] = {}  # decision_id -> when it closed (ignore late duplicates)
        self._early: dict[str, float] = {}  # closed before its window ended (every slot final) -> deadline
        self.expired_through = float("-inf")  # every decision added with a deadline up to this is closed
        self._lock = threading.Lock()
        self._max_reward = max(self.config.by_kind.values(), default=self.config.default_reward)
        self.late_interactions = 0

    @property
    def pending(self) -> int:
        """Open decisions."""
        return len(self._pending)

    def open_decision_ids(self) -> set[str]:
        """Ids of decisions still waiting for rewards, and of decisions interactions wait for."""
        with self._lock:
            return set(self._pending) | set(self._orphans)

    def add_decision(self, decision: Decision, *, final: Iterable[int] = ()) -> list[SlotReward]:
        """Open a decision's window; returns slots already final (from interactions that came first).
        ``final``: positions learned already (a learner resuming from a checkpoint)."""
        out: list[SlotReward] = []
        with self._lock:
            if decision.decision_id in self._pending or decision.decision_id in self._closed:
                return out
            deadline = decision.ts.timestamp() + self.config.window_s
            self._pending[decision.decision_id] = p = _Pending(decision, deadline, final=set(final))
            for _, it in self._orphans.pop(decision.decision_id, []):
                out.extend(self._apply(p, it))
            if len(p.final) == len(decision.slots):
                self._close_early(p)
            if len(self._pending) > self.max_pending:
                oldest = min(self._pending.values(), key=lambda q: q.deadline_s)
                out.extend(self._close(oldest))
        return out

    def add_interaction(self, interaction: InteractionLike) -> list[SlotReward]:
        """Apply one interaction; returns the slots it made final."""
        did = interaction.decision_id
        if did is None or interaction.kind not in self.config.by_kind:
            return []
        with self._lock:
            p = self._pending.get(did)
            if p is None:
                if did in self._closed:
                    self.late_interactions += 1
                else:
                    self._orphans.setdefault(did, []).append((self.clock(), interaction))
                return []
            out = self._apply(p, interaction)
            if len(p.final) == len(p.decision.slots):
                self._close_early(p)
            return out

    def mark_closed(self, decision_id: str) -> None:
        """Treat a decision as closed (learned before a checkpoint this joiner resumes from): it and
        its interactions are ignored from now on."""
        with self._lock:
            self._orphans.pop(decision_id, None)
            self._closed[decision_id] = self.clock()

    def snapshot(self) -> dict[str, Any]:
        """What a learner resuming from a checkpoint taken now needs to learn no slot twice: the
        expiry horizon, the learned positions of open decisions, and the decisions closed early."""
        with self._lock:
            return {
                "expired_through": self.expired_through,
                "final": {d: sorted(p.final) for d, p in self._pending.items() if p.final},
                "closed_early": sorted(self._early),
            }

    def expire(self, now_s: float | None = None) -> list[SlotReward]:
        """Close every decision whose window has passed; returns their non-final slots' rewards."""
        now = self.clock() if now_s is None else now_s
        out: list[SlotReward] = []
        with self._lock:
            for p in [p for p in self._pending.values() if p.deadline_s <= now]:
                out.extend(self._close(p))
            self.expired_through = max(self.expired_through, now)
            for did in [d for d, deadline in self._early.items() if deadline <= now]:
                del self._early[did]
            horizon = now - self.config.window_s
            for did in [d for d, items in self._orphans.items() if items[-1][0] < horizon]:
                del self._orphans[did]
            for did in [d for d, t in self._closed.items() if t < horizon]:
                del self._closed[did]
        return out

    def _apply(self, p: _Pending, it: InteractionLike) -> list[SlotReward]:
        if it.event_id in p.seen_events:
            return []
        p.seen_events.add(it.event_id)
        ts = it.ts.timestamp()
        start = p.decision.ts.timestamp()
        if not start <= ts <= start + self.config.window_s:
            return []
        reward = self.config.by_kind[it.kind]
        out: list[SlotReward] = []
        for slot in p.decision.slots:
            if slot.item_id != it.item_id or slot.position in p.final:
                continue
            best = max(p.best.get(slot.position, reward), reward)
            p.best[slot.position] = best
            if best >= self._max_reward:
                p.final.add(slot.position)
                out.append(SlotReward(p.decision, slot.position, slot.item_id, best, "max_reward"))
        return out

    def _close_early(self, p: _Pending) -> None:
        did = p.decision.decision_id
        del self._pending[did]
        self._closed[did] = self.clock()
        self._early[did] = p.deadline_s

    def _close(self, p: _Pending) -> list[SlotReward]:
        out = [
            SlotReward(
                p.decision,
                s.position,
                s.item_id,
                p.best.get(s.position, self.config.default_reward),
                "window",
            )
            for s in p.decision.slots
            if s.position not in p.final
        ]
        del self._pending[p.decision.decision_id]
        self._closed[p.decision.decision_id] = self.clock()
        return out
