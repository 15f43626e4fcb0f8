"""A batch of interactions applied to item and user warm-up states at once, in numpy.

The per-event rules of :class:`~models.warmup.base.WarmupModel` (``update_item`` / ``update_user``)
define the result; :func:`apply_batch` computes the same numbers for a whole batch:

* a user's statistic of an event depends only on the user's prior and the item's counterpart vector,
  so the user's sums *before* each event are exclusive prefix sums over the user's earlier events in
  the batch (grouped ``cumsum`` in event order);
* the user's vector just before each event, ``prior + δ(prefix)``, is the item's evidence
  counterpart (``weight 0`` when that vector is all zeros: it says nothing about where the item is);
* the items' statistics are summed per item (``np.add.at``), then every touched state gets its new
  ``δ`` in one vectorised call.

The stage does the I/O (states from its checkpoint, rows to the feature store) and the event-id
de-duplication; this module holds only arithmetic. :func:`apply_per_event` runs the same batch
through the per-event rules one event at a time: the reference the batch form is tested against
(``tests/warmup/test_batch.py``) and the baseline of ``benchmarks/warmup.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.warmup.base import Evidence, ItemWarmState, UserWarmState, WarmStatus, WarmupModel


@dataclass
class StateBlock:
    """The sufficient statistics of ``n`` states (items or users) as arrays (``d`` = item_dim)."""

    prior: NDArray[np.float32]  # (n, d)
    weighted_sum: NDArray[np.float64]  # (n, d)
    evidence: NDArray[np.float64]  # (n,) Σ|w|
    positives: NDArray[np.int64]  # (n,)
    interactions: NDArray[np.int64]  # (n,)

    @classmethod
    def empty(cls, n: int, d: int) -> StateBlock:
        """``n`` states with zero priors and no evidence."""
        return cls(
            np.zeros((n, d), dtype=np.float32),
            np.zeros((n, d), dtype=np.float64),
            np.zeros(n, dtype=np.float64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.prior.shape[0])

    @classmethod
    def of(cls, states: Sequence[ItemWarmState] | Sequence[UserWarmState]) -> StateBlock:
        """The statistics of ``states`` (rows in the order given)."""
        return cls(
            np.stack([s.prior for s in states]).astype(np.float32),
            np.stack([s.weighted_sum for s in states]).astype(np.float64),
            np.array([s.evidence for s in states], dtype=np.float64),
            np.array([s.positives for s in states], dtype=np.int64),
            np.array([s.interactions for s in states], dtype=np.int64),
        )

    def add(
        self,
        rows: NDArray[np.int64],
        sums: NDArray[np.float64],
        evidence: NDArray[np.float64],
        positives: NDArray[np.bool_],
        counted: NDArray[np.bool_] | None = None,
    ) -> StateBlock:
        """A new block with each event's statistics added to its row (``counted``: which events count
        as interactions, default all)."""
        out = StateBlock(
            self.prior,
            self.weighted_sum.copy(),
            self.evidence.copy(),
            self.positives.copy(),
            self.interactions.copy(),
        )
        np.add.at(out.weighted_sum, rows, sums)
        np.add.at(out.evidence, rows, evidence)
        np.add.at(out.positives, rows, positives.astype(np.int64))
        np.add.at(out.interactions, rows, 1 if counted is None else counted.astype(np.int64))
        # the per-event rules keep the sums in float32 between updates: so do the blocks
        out.weighted_sum = out.weighted_sum.astype(np.float32).astype(np.float64)
        return out


@dataclass(frozen=True)
class EventBlock:
    """``m`` de-duplicated interactions in event order, as rows of the two state blocks."""

    item: NDArray[np.int64]  # (m,) row in the item block
    user: NDArray[np.int64]  # (m,) row in the user block
    weight: NDArray[np.float64]  # (m,) signed evidence weight
    positive: NDArray[np.bool_]  # (m,)
    user_new: NDArray[np.bool_]  # (m,) False: the user has counted this event already (item only)

    def __len__(self) -> int:
        return int(self.item.shape[0])


@dataclass(frozen=True)
class BatchResult:
    """The updated blocks and the served corrections ``δ`` of every state in them."""

    items: StateBlock
    users: StateBlock
    item_delta: NDArray[np.float32]  # (n_items, d)
    user_delta: NDArray[np.float32]  # (n_users, d)
    item_status: list[WarmStatus]

    def item_state(self, row: int, state: ItemWarmState, new_keys: Sequence[str], keep: int) -> ItemWarmState:
        """``state`` (row ``row`` of the item block) after the batch; ``new_keys`` join its seen event
        ids, of which the last ``keep`` are kept."""
        return ItemPass(self.items, self.item_delta, self.item_status).state(row, state, new_keys, keep)

    def user_state(self, row: int, state: UserWarmState, new_keys: Sequence[str], keep: int) -> UserWarmState:
        """``state`` (row ``row`` of the user block) after the batch, as :meth:`item_state`."""
        return _restated(state, self.users, row, self.user_delta[row], new_keys, keep)


S = TypeVar("S", ItemWarmState, UserWarmState)


def _restated(
    state: S, block: StateBlock, row: int, delta: NDArray[np.float32], keys: Sequence[str], keep: int
) -> S:
    return dataclasses.replace(
        state,
        delta=delta,
        weighted_sum=block.weighted_sum[row].astype(np.float32),
        evidence=float(block.evidence[row]),
        positives=int(block.positives[row]),
        interactions=int(block.interactions[row]),
        seen_event_ids=(state.seen_event_ids + tuple(keys))[-keep:],
    )


def _exclusive_group_prefix(values: NDArray[np.float64], group: NDArray[np.int64]) -> NDArray[np.float64]:
    """For each row ``k``: the sum of ``values[j]`` over earlier rows ``j < k`` of the same group."""
    m = len(group)
    if m == 0:
        return np.zeros_like(values)
    order = np.argsort(group, kind="stable")  # groups contiguous, event order kept inside each
    v = values[order]
    inclusive = np.cumsum(v, axis=0)
    g = group[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, m]))
    before_group = inclusive[run_start] - v[run_start]
    out = np.empty_like(values)
    out[order] = inclusive - v - before_group
    return out


def _check(
    items: StateBlock, users: StateBlock, events: EventBlock, counterparts: NDArray[np.floating]
) -> None:
    d = items.prior.shape[1]
    if users.prior.shape[1] != d:
        raise InvalidInputError("users.prior", users.prior.shape, f"must have {d} columns (item_dim)")
    if counterparts.shape != items.prior.shape:
        raise InvalidInputError("item_counterparts", counterparts.shape, f"must be {items.prior.shape}")
    m = len(events)
    for name in ("item", "user", "weight", "positive", "user_new"):
        if getattr(events, name).shape != (m,):
            raise InvalidInputError(f"events.{name}", getattr(events, name).shape, f"must be ({m},)")
    if m and (events.item.min() < 0 or events.item.max() >= len(items)):
        raise InvalidInputError("events.item", "out of range", f"rows must be in [0, {len(items)})")
    if m and (events.user.min() < 0 or events.user.max() >= len(users)):
        raise InvalidInputError("events.user", "out of range", f"rows must be in [0, {len(users)})")
    if not bool(np.isfinite(events.weight).all()):
        raise InvalidInputError("events.weight", "non-finite", "must be finite")


@dataclass(frozen=True)
class UserPass:
    """The users' half of a batch: new user statistics, their ``δ``, and the user's vector just before
    each event (the item's evidence counterpart)."""

    users: StateBlock
    user_delta: NDArray[np.float32]  # (n_users, d)
    before: NDArray[np.float64]  # (m, d)

    def state(self, row: int, state: UserWarmState, new_keys: Sequence[str], keep: int) -> UserWarmState:
        """``state`` (row ``row``) after the pass, as :meth:`BatchResult.user_state`."""
        return _restated(state, self.users, row, self.user_delta[row], new_keys, keep)


@dataclass(frozen=True)
class ItemPass:
    """The items' half of a batch: new item statistics, their ``δ`` and status."""

    items: StateBlock
    item_delta: NDArray[np.float32]  # (n_items, d)
    item_status: list[WarmStatus]

    def state(self, row: int, state: ItemWarmState, new_keys: Sequence[str], keep: int) -> ItemWarmState:
        """``state`` (row ``row``) after the pass, as :meth:`BatchResult.item_state`."""
        new = _restated(state, self.items, row, self.item_delta[row], new_keys, keep)
        return dataclasses.replace(new, status=self.item_status[row])


def user_pass(
    model: WarmupModel, users: StateBlock, events: EventBlock, counterparts: NDArray[np.floating]
) -> UserPass:
    """Apply ``events`` in order to the users; ``counterparts`` is ``(m, d)``: what each event's item
    contributes to its user (its content vector, or its served vector at the start of the batch).
    ``events.item`` is not read."""
    us, w = events.user, events.weight
    user_w = np.where(events.user_new, w, 0.0)
    s_user = model.statistics(users.prior[us], np.asarray(counterparts, dtype=np.float64), user_w, "user")
    s_user[~events.user_new] = 0.0
    abs_user = np.abs(user_w)
    sum_before = users.weighted_sum[us] + _exclusive_group_prefix(s_user, us)
    n_before = users.evidence[us] + _exclusive_group_prefix(abs_user[:, None], us)[:, 0]
    user_prior = users.prior[us]
    before = (user_prior + model.user_deltas(user_prior, sum_before, n_before)).astype(np.float64)
    new_users = users.add(us, s_user, abs_user, events.positive & events.user_new, events.user_new)
    user_delta = model.user_deltas(new_users.prior, new_users.weighted_sum, new_users.evidence)
    return UserPass(new_users, user_delta, before)


def item_pass(
    model: WarmupModel,
    items: StateBlock,
    rows: NDArray[np.int64],
    before: NDArray[np.floating],
    weight: NDArray[np.float64],
    positive: NDArray[np.bool_],
) -> ItemPass:
    """Add each event's evidence to its item (``rows``): the user's vector just before the event
    (``before``, ``(m, d)``), with no weight when that vector is all zeros (it says nothing about where
    the item is). Item sums are order-free, so events may come from any number of user passes."""
    x_user = np.asarray(before, dtype=np.float64)
    item_w = np.where(np.any(x_user != 0.0, axis=1), weight, 0.0)
    s_item = model.statistics(items.prior[rows], x_user, item_w, "item")
    new_items = items.add(rows, s_item, np.abs(item_w), positive)
    item_delta = model.item_deltas(
        new_items.prior, new_items.weighted_sum, new_items.evidence, new_items.positives
    )
    status = [
        model.status(int(p), int(n)) for p, n in zip(new_items.positives, new_items.interactions, strict=True)
    ]
    return ItemPass(new_items, item_delta, status)


def apply_batch(
    model: WarmupModel,
    items: StateBlock,
    users: StateBlock,
    events: EventBlock,
    item_counterparts: NDArray[np.floating] | None = None,
) -> BatchResult:
    """Apply ``events`` in order to both blocks (:func:`user_pass`, then :func:`item_pass`); the
    inputs are not modified.

    Parameters
    ----------
    model
        The warm-up rules (statistics, ``δ``, bound, gate, status).
    item_counterparts
        ``(n_items, d)``: what each item contributes to its users' statistics (its content vector,
        the default, or its served vector at the start of the batch).
    """
    counterparts = items.prior if item_counterparts is None else np.asarray(item_counterparts)
    _check(items, users, events, counterparts)
    up = user_pass(model, users, events, counterparts[events.item])
    ip = item_pass(model, items, events.item, up.before, events.weight, events.positive)
    return BatchResult(ip.items, up.users, ip.item_delta, up.user_delta, ip.item_status)


def _states(block: StateBlock, cls: type[ItemWarmState] | type[UserWarmState]) -> list[Any]:
    return [
        cls(
            prior=block.prior[j],
            delta=np.zeros_like(block.prior[j]),
            weighted_sum=block.weighted_sum[j].astype(np.float32),
            evidence=float(block.evidence[j]),
            positives=int(block.positives[j]),
            interactions=int(block.interactions[j]),
        )
        for j in range(len(block))
    ]


def _block(states: Sequence[ItemWarmState] | Sequence[UserWarmState], like: StateBlock) -> StateBlock:
    return dataclasses.replace(StateBlock.of(states), prior=like.prior) if states else like


def apply_per_event(
    model: WarmupModel,
    items: StateBlock,
    users: StateBlock,
    events: EventBlock,
    item_counterparts: NDArray[np.floating] | None = None,
) -> BatchResult:
    """:func:`apply_batch` computed with ``update_user`` once per event and ``update_item`` once per
    item (the per-event rules, slower)."""
    counterparts = items.prior if item_counterparts is None else np.asarray(item_counterparts)
    _check(items, users, events, counterparts)
    item_states = [model.update_item(s, []) for s in _states(items, ItemWarmState)]
    user_states = [model.update_user(s, []) for s in _states(users, UserWarmState)]
    evidence: dict[int, list[Evidence]] = {}
    for k in range(len(events)):
        i, u, w = int(events.item[k]), int(events.user[k]), float(events.weight[k])
        positive = bool(events.positive[k])
        x_user = user_states[u].vector
        w_item = w if bool(np.any(x_user)) else 0.0
        evidence.setdefault(i, []).append(Evidence(f"e{k}", x_user, w_item, positive))
        if events.user_new[k]:
            counterpart = np.asarray(counterparts[i], dtype=np.float32)
            user_states[u] = model.update_user(user_states[u], [Evidence(f"e{k}", counterpart, w, positive)])
    item_states = [model.update_item(s, evidence.get(j, [])) for j, s in enumerate(item_states)]
    new_items, new_users = _block(item_states, items), _block(user_states, users)
    d = items.prior.shape[1]
    return BatchResult(
        new_items,
        new_users,
        np.stack([s.delta for s in item_states]) if item_states else np.zeros((0, d), np.float32),
        np.stack([s.delta for s in user_states]) if user_states else np.zeros((0, d), np.float32),
        [s.status for s in item_states],
    )
