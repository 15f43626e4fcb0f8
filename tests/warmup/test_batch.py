"""The batch form of the warm-up (models.warmup.batch) against the per-event rules it must reproduce:
every model, users updated event by event inside the batch, items gated and bounded, events a user
has counted already applied to the item only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.warmup import Evidence, ItemWarmState, ShrinkageWarmup, UserWarmState, WarmupModel
from models.warmup.base import Vector
from models.warmup.batch import EventBlock, StateBlock, apply_batch, apply_per_event
from models.warmup.posterior import PosteriorCalibration, PosteriorWarmup, SideCalibration

D = 6


class _RowByRow(WarmupModel):
    """A model with only the per-row hooks: the base class's row-by-row batch fallback runs."""

    def _statistic(self, prior: Vector, counterpart: NDArray[np.float64], weight: float, side: str) -> Vector:
        return np.asarray(weight * counterpart - 0.1 * weight * prior)

    def _delta(self, prior: Vector, weighted_sum: Vector, evidence: float, side: str) -> Vector:
        return np.asarray(weighted_sum / (evidence + 2.0), dtype=np.float32)


def _models() -> list[WarmupModel]:
    rng = np.random.default_rng(3)
    side = SideCalibration.fit(rng.standard_normal((200, D)) + 0.5, 1.2, 0.1)
    cal = PosteriorCalibration(item=side, user=SideCalibration.fit(rng.standard_normal((200, D)), 1.0, 0.0))
    return [
        ShrinkageWarmup(prior_strength=2.0, user_prior_strength=3.0, delta_max=0.5),
        PosteriorWarmup(cal, prior_strength=0.5, user_prior_strength=2.0, min_positives=2),
        _RowByRow(delta_max=0.8, min_positives=1),
    ]


_block = StateBlock.of


def _case(
    seed: int, n_items: int = 7, n_users: int = 5, m: int = 60
) -> tuple[list[ItemWarmState], list[UserWarmState], EventBlock]:
    rng = np.random.default_rng(seed)
    items = [ItemWarmState.new(f"i{j}", rng.standard_normal(D).astype(np.float32)) for j in range(n_items)]
    users = [UserWarmState.new(f"u{j}", rng.standard_normal(D).astype(np.float32)) for j in range(n_users)]
    users[0] = UserWarmState.new("u0", np.zeros(D, dtype=np.float32))  # a new user: no prior
    # some states carry evidence from earlier batches
    items[1] = replace(
        items[1],
        weighted_sum=rng.standard_normal(D).astype(np.float32),
        evidence=2.0,
        positives=2,
        interactions=5,
    )
    users[2] = replace(
        users[2],
        weighted_sum=rng.standard_normal(D).astype(np.float32),
        evidence=1.5,
        positives=1,
        interactions=3,
    )
    events = EventBlock(
        item=rng.integers(n_items, size=m).astype(np.int64),
        user=rng.integers(n_users, size=m).astype(np.int64),
        weight=rng.choice([0.0, 1.0, 2.0, -0.5], size=m).astype(np.float64),
        positive=rng.random(m) < 0.4,
        user_new=rng.random(m) < 0.85,
    )
    return items, users, events


def _per_event(
    model: WarmupModel, items: list[ItemWarmState], users: list[UserWarmState], ev: EventBlock
) -> tuple[list[ItemWarmState], list[UserWarmState]]:
    """The reference: users updated one event at a time, each item's evidence collected, then applied."""
    users = list(users)
    evidence: dict[int, list[Evidence]] = {}
    for k in range(len(ev)):
        i, u, w = int(ev.item[k]), int(ev.user[k]), float(ev.weight[k])
        x_user = users[u].vector
        w_item = w if bool(np.any(x_user)) else 0.0
        evidence.setdefault(i, []).append(Evidence(f"e{k}", x_user, w_item, bool(ev.positive[k])))
        if ev.user_new[k]:
            users[u] = model.update_user(
                users[u], [Evidence(f"e{k}", items[i].prior, w, bool(ev.positive[k]))]
            )
    return [model.update_item(s, evidence.get(j, [])) for j, s in enumerate(items)], users


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("which", [0, 1, 2])
def test_batch_equals_the_per_event_rules(seed: int, which: int) -> None:
    model = _models()[which]
    items, users, events = _case(seed)
    # states as the stage holds them: δ consistent with the statistics
    items = [model.update_item(s, []) for s in items]
    users = [model.update_user(s, []) for s in users]
    want_items, want_users = _per_event(model, items, users, events)
    got = apply_batch(model, _block(items), _block(users), events)
    for j, s in enumerate(want_items):
        np.testing.assert_allclose(got.items.prior[j] + got.item_delta[j], s.vector, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(got.items.weighted_sum[j], s.weighted_sum, atol=1e-5, rtol=1e-5)
        assert got.items.evidence[j] == pytest.approx(s.evidence)
        assert (got.items.positives[j], got.items.interactions[j]) == (s.positives, s.interactions)
        assert got.item_status[j] == s.status
    for j, s in enumerate(want_users):
        np.testing.assert_allclose(got.users.prior[j] + got.user_delta[j], s.vector, atol=1e-5, rtol=1e-5)
        assert got.users.evidence[j] == pytest.approx(s.evidence)
        assert (got.users.positives[j], got.users.interactions[j]) == (s.positives, s.interactions)


def test_the_result_moves_items_and_leaves_inputs_alone() -> None:
    """A non-trivial case: vectors change, the input blocks are not modified."""
    model = _models()[0]
    items, users, events = _case(5)
    block = _block(items)
    before = block.weighted_sum.copy()
    got = apply_batch(model, block, _block(users), events)
    assert np.array_equal(block.weighted_sum, before)
    assert float(np.abs(got.item_delta).max()) > 0.01
    assert float(np.abs(got.user_delta).max()) > 0.01


def test_served_counterparts_change_only_the_users() -> None:
    model = _models()[0]
    items, users, events = _case(6)
    plain = apply_batch(model, _block(items), _block(users), events)
    other = np.ones((len(items), D), dtype=np.float32)
    served = apply_batch(model, _block(items), _block(users), events, item_counterparts=other)
    assert not np.allclose(plain.user_delta, served.user_delta)


def test_an_empty_batch_keeps_every_state() -> None:
    model = _models()[1]
    items, users, _ = _case(7)
    none = EventBlock(*(np.zeros(0, dtype=t) for t in (np.int64, np.int64, np.float64, np.bool_, np.bool_)))
    got = apply_batch(model, _block(items), _block(users), none)
    for j, s in enumerate(items):
        np.testing.assert_allclose(
            got.items.prior[j] + got.item_delta[j], model.update_item(s, []).vector, atol=1e-6
        )


def test_rows_out_of_range_and_bad_weights_are_refused() -> None:
    model = _models()[0]
    items, users, events = _case(8)
    with pytest.raises(InvalidInputError):
        apply_batch(model, _block(items), _block(users), replace(events, item=events.item + 100))
    with pytest.raises(InvalidInputError):
        apply_batch(
            model,
            _block(items),
            _block(users),
            replace(events, weight=np.where(events.weight == 0, np.nan, events.weight)),
        )
    with pytest.raises(InvalidInputError):
        apply_batch(model, _block(items), StateBlock.empty(5, D + 1), events)


@pytest.mark.parametrize("which", [0, 1])
def test_the_per_event_kernel_is_the_same_computation(which: int) -> None:
    """apply_per_event (the benchmark's baseline) gives what apply_batch gives."""
    model = _models()[which]
    items, users, events = _case(11)
    a = apply_batch(model, _block(items), _block(users), events)
    b = apply_per_event(model, _block(items), _block(users), events)
    np.testing.assert_allclose(a.item_delta, b.item_delta, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(a.user_delta, b.user_delta, atol=1e-5, rtol=1e-5)
    assert a.item_status == b.item_status
