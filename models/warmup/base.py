"""The warm-up interface: item/user state records and the public update rules.

An item's served vector is ``v = c + δ`` where ``c`` is its frozen content vector (item-tower output)
and ``δ`` a bounded behavioural correction learned from its own interactions. The public methods of
:class:`WarmupModel` enforce the shared rules (event de-duplication, the bound on ``‖δ‖``, status
transitions); implementations only say how evidence turns into ``δ`` (``_delta``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError

WarmStatus = Literal["cold", "warming", "warm"]

Vector = NDArray[np.float32]
#: ``(n, d)`` rows of the batch form, one per event or per state.
Rows = NDArray[np.float64]
AnyRows = NDArray[np.floating]
F32Rows = NDArray[np.float32]


@dataclass(frozen=True)
class Evidence:
    """One interaction as the warm-up sees it.

    Parameters
    ----------
    event_id
        Unique id of the interaction event; a re-delivered event (same id) is ignored.
    counterpart
        ``(d,)`` float32: the *user's* vector when updating an item, the *item's* vector when updating
        a user.
    weight
        Signed evidence weight (e.g. click 1.0, purchase 3.0, a low rating negative, an impression 0).
    positive
        Whether this interaction counts as a positive (for counts and status).
    """

    event_id: str
    counterpart: Vector
    weight: float
    positive: bool


@dataclass(frozen=True)
class _WarmState:
    """Sufficient statistics shared by items and users (``d`` = item_dim)."""

    prior: Vector  # (d,) the frozen prior vector (content vector c for items)
    delta: Vector  # (d,) current bounded correction; served vector = prior + delta
    weighted_sum: Vector  # (d,) Σ_j of the model's per-event statistic (w_j x_j for shrinkage)
    evidence: float = 0.0  # Σ |w_j|
    positives: int = 0
    interactions: int = 0
    seen_event_ids: tuple[str, ...] = field(default=())

    @property
    def vector(self) -> Vector:
        """The served (blended) vector, shape ``(d,)`` float32."""
        return (self.prior + self.delta).astype(np.float32)


@dataclass(frozen=True)
class ItemWarmState(_WarmState):
    """Warm-up state of one item; ``status`` moves cold → warming → warm with evidence."""

    item_id: str = ""
    status: WarmStatus = "cold"

    @classmethod
    def new(cls, item_id: str, content: Vector) -> ItemWarmState:
        """A cold item with no evidence: served vector = content vector."""
        c = np.asarray(content, dtype=np.float32)
        if c.ndim != 1:
            raise InvalidInputError("content", c.shape, "must be a 1-D vector")
        return cls(
            prior=c, delta=np.zeros_like(c), weighted_sum=np.zeros_like(c), item_id=item_id, status="cold"
        )


@dataclass(frozen=True)
class UserWarmState(_WarmState):
    """Warm-up state of one user; ``prior`` is the trained user embedding (zeros if unknown)."""

    user_id: str = ""

    @classmethod
    def new(cls, user_id: str, prior: Vector) -> UserWarmState:
        """A user with no online evidence yet."""
        p = np.asarray(prior, dtype=np.float32)
        if p.ndim != 1:
            raise InvalidInputError("prior", p.shape, "must be a 1-D vector")
        return cls(prior=p, delta=np.zeros_like(p), weighted_sum=np.zeros_like(p), user_id=user_id)


S = TypeVar("S", bound=_WarmState)


class WarmupModel(ABC):
    """Turns interactions into bounded corrections of content vectors.

    Parameters
    ----------
    delta_max
        Bound on an item's ``‖δ‖`` relative to its content vector (``‖δ‖ ≤ delta_max · max(‖c‖, 1e-3)``).
        User corrections are not bounded (see :meth:`update_user`).
    warm_after
        Positive interactions after which an item's status becomes ``warm``.
    max_tracked_events
        How many recent event ids each state remembers for de-duplication of re-deliveries.
    min_positives
        The gate: an item's vector stays its content vector until it has this many positives (the
        evidence level below which behaviour did not beat content on validation); 0 or 1 = no gate.
    """

    def __init__(
        self,
        delta_max: float = 1.0,
        warm_after: int = 20,
        max_tracked_events: int = 256,
        min_positives: int = 0,
    ) -> None:
        if not delta_max > 0:
            raise InvalidInputError("delta_max", delta_max, "must be > 0")
        if warm_after < 1:
            raise InvalidInputError("warm_after", warm_after, "must be >= 1")
        if max_tracked_events < 1:
            raise InvalidInputError("max_tracked_events", max_tracked_events, "must be >= 1")
        self.delta_max = float(delta_max)
        self.warm_after = int(warm_after)
        self.max_tracked_events = int(max_tracked_events)
        if min_positives < 0:
            raise InvalidInputError("min_positives", min_positives, "must be >= 0")
        self.min_positives = int(min_positives)

    def update_item(self, state: ItemWarmState, evidence: Sequence[Evidence]) -> ItemWarmState:
        """Apply new evidence to an item; duplicates (seen event ids) are ignored."""
        updated = self._accumulate(state, evidence)
        return replace(updated, status=self.status(updated.positives, updated.interactions))

    def status(self, positives: int, interactions: int) -> WarmStatus:
        """An item's status for its counts: ``warm`` from ``warm_after`` positives, ``warming`` once
        it has any interaction, else ``cold``."""
        if positives >= self.warm_after:
            return "warm"
        return "warming" if interactions > 0 else "cold"

    def update_user(self, state: UserWarmState, evidence: Sequence[Evidence]) -> UserWarmState:
        """Apply new evidence to a user (user-side hyperparameters; no bound, so a new user with a zero
        prior moves to the posterior mean of the items it engaged with)."""
        return self._accumulate(state, evidence, side="user")

    def _accumulate(self, state: S, evidence: Sequence[Evidence], side: str = "item") -> S:
        seen = set(state.seen_event_ids)
        order = list(state.seen_event_ids)
        total = state.weighted_sum.astype(np.float64)
        weight_sum = state.evidence
        positives, interactions = state.positives, state.interactions
        d = state.prior.shape[0]
        for ev in evidence:
            if ev.event_id in seen:
                continue
            x = np.asarray(ev.counterpart, dtype=np.float64)
            if x.shape != (d,):
                raise InvalidInputError("evidence.counterpart", x.shape, f"must have shape ({d},)")
            if not np.isfinite(ev.weight):
                raise InvalidInputError("evidence.weight", ev.weight, "must be finite")
            seen.add(ev.event_id)
            order.append(ev.event_id)
            total += self._statistic(state.prior, x, float(ev.weight), side)
            weight_sum += abs(ev.weight)
            interactions += 1
            positives += int(ev.positive)
        order = order[-self.max_tracked_events :]
        raw = self._delta(state.prior, total.astype(np.float32), float(weight_sum), side)
        # The bound protects an item's content semantics; a user's prior is only the trained embedding
        # (zeros for a new user), so the user side is the plain posterior mean.
        delta = self._bound(state.prior, raw) if side == "item" else raw
        if side == "item" and positives < self.min_positives:
            delta = np.zeros_like(delta)  # gated: too little evidence to beat the content vector
        return replace(
            state,
            delta=delta,
            weighted_sum=total.astype(np.float32),
            evidence=float(weight_sum),
            positives=positives,
            interactions=interactions,
            seen_event_ids=tuple(order),
        )

    # ------------------------------------------------------------------ batch form (models.warmup.batch)
    def statistics(self, prior: AnyRows, counterpart: Rows, weight: Rows, side: str) -> Rows:
        """``(m, d)``: what each of ``m`` events adds to its state's ``weighted_sum`` (row ``k`` equals
        ``_statistic(prior[k], counterpart[k], weight[k], side)``)."""
        if prior.shape != counterpart.shape or weight.shape != (prior.shape[0],):
            raise InvalidInputError(
                "statistics", (prior.shape, counterpart.shape, weight.shape), "shapes differ"
            )
        return np.asarray(self._statistics(prior, counterpart, weight, side), dtype=np.float64)

    def item_deltas(
        self, prior: NDArray[np.float32], weighted_sum: Rows, evidence: Rows, positives: NDArray[np.int64]
    ) -> NDArray[np.float32]:
        """``(n, d)`` served corrections of ``n`` items: bounded, and zero below the gate."""
        raw = np.asarray(self._deltas(prior, weighted_sum.astype(np.float32), evidence, "item"), np.float64)
        limit = self.delta_max * np.maximum(np.linalg.norm(prior.astype(np.float64), axis=1), 1e-3)
        norm = np.linalg.norm(raw, axis=1)
        scale = np.where(norm > limit, limit / np.where(norm > 0, norm, 1.0), 1.0)
        out = raw * scale[:, None]
        out[positives < self.min_positives] = 0.0
        return out.astype(np.float32)

    def user_deltas(self, prior: F32Rows, weighted_sum: Rows, evidence: Rows) -> F32Rows:
        """``(n, d)`` corrections of ``n`` users (unbounded, see :meth:`update_user`)."""
        return np.asarray(self._deltas(prior, weighted_sum.astype(np.float32), evidence, "user"), np.float32)

    def _statistics(self, prior: AnyRows, counterpart: Rows, weight: Rows, side: str) -> Rows:
        """Row by row through :meth:`_statistic`; models override it with one array expression."""
        return _row_by_row(self._statistic, prior, counterpart, weight, side)

    def _deltas(self, prior: AnyRows, sums: F32Rows, evidence: Rows, side: str) -> AnyRows:
        """Row by row through :meth:`_delta`; models override it with one array expression."""
        return _row_by_row(self._delta, prior, sums, evidence, side)

    def _bound(self, prior: Vector, delta: Vector) -> Vector:
        limit = self.delta_max * max(float(np.linalg.norm(prior)), 1e-3)
        norm = float(np.linalg.norm(delta))
        if norm > limit:
            delta = delta * (limit / norm)
        return np.asarray(delta, dtype=np.float32)

    def _statistic(self, prior: Vector, counterpart: NDArray[np.float64], weight: float, side: str) -> Vector:
        """What one event adds to ``weighted_sum`` (default ``w·x``); it may depend on the prior,
        which is fixed for the life of a state."""
        return np.asarray(weight * counterpart)

    @abstractmethod
    def _delta(self, prior: Vector, weighted_sum: Vector, evidence: float, side: str) -> Vector:
        """Unbounded correction ``δ`` (``(d,)``) from the prior and the sufficient statistics."""


def _row_by_row(
    fn: Callable[[Vector, Any, float, str], Vector], prior: AnyRows, rows: AnyRows, scalars: Rows, side: str
) -> Rows:
    """``fn(prior[k], rows[k], scalars[k], side)`` stacked over ``k``: the batch form of a per-row hook."""
    out = [fn(p.astype(np.float32), r, float(x), side) for p, r, x in zip(prior, rows, scalars, strict=True)]
    return np.asarray(out, dtype=np.float64).reshape(rows.shape)
