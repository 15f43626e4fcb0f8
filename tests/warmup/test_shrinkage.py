"""Warm-up math: bound on δ, monotonicity in evidence, idempotence under re-delivery."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from coldstart.errors import InvalidInputError
from models.warmup import Evidence, ItemWarmState, ShrinkageConfig, ShrinkageWarmup, UserWarmState
from models.warmup.shrinkage import build_shrinkage, fit_behavior_scale

D = 16


def _evidence(
    rng: np.random.Generator, n: int, start: int = 0, center: np.ndarray | None = None
) -> list[Evidence]:
    out = []
    for j in range(start, start + n):
        x = rng.normal(size=D).astype(np.float32)
        if center is not None:
            x = center + 0.1 * x
        out.append(Evidence(event_id=f"e{j}", counterpart=x.astype(np.float32), weight=1.0, positive=True))
    return out


@pytest.mark.parametrize("delta_max", [0.05, 0.3, 1.0, 3.0])
def test_delta_norm_never_exceeds_bound(delta_max: float) -> None:
    rng = np.random.default_rng(0)
    model = ShrinkageWarmup(prior_strength=0.5, behavior_scale=10.0, delta_max=delta_max)
    for trial in range(20):
        c = rng.normal(size=D).astype(np.float32) * rng.uniform(0.1, 5)
        state = ItemWarmState.new(f"i{trial}", c)
        for step in range(10):
            state = model.update_item(state, _evidence(rng, 3, start=3 * step))
            assert np.linalg.norm(state.delta) <= delta_max * np.linalg.norm(c) * (1 + 1e-5)


def test_blend_weight_is_monotone_in_evidence() -> None:
    rng = np.random.default_rng(1)
    model = ShrinkageWarmup(prior_strength=5.0, delta_max=100.0)
    c = rng.normal(size=D).astype(np.float32)
    target = rng.normal(size=D).astype(np.float32)
    state = ItemWarmState.new("i", c)
    distances = [np.linalg.norm(state.vector - target)]
    lambdas = [0.0]
    for step in range(12):
        # identical evidence: every user sits at `target`, so the behavioural estimate is exactly `target`
        ev = [Evidence(f"e{step}", target, 1.0, True)]
        state = model.update_item(state, ev)
        distances.append(float(np.linalg.norm(state.vector - target)))
        lambdas.append(model.evidence_weight(state.evidence))
    assert all(b > a for a, b in itertools.pairwise(lambdas))
    assert all(b < a for a, b in itertools.pairwise(distances))
    # posterior mean: exactly c + n/(n+κ) (target - c)
    n = 12
    np.testing.assert_allclose(state.vector, c + n / (n + 5.0) * (target - c), rtol=1e-5, atol=1e-6)


def test_no_evidence_serves_content_vector_and_status_moves() -> None:
    model = ShrinkageWarmup(warm_after=3)
    c = np.ones(D, dtype=np.float32)
    state = ItemWarmState.new("i", c)
    assert state.status == "cold"
    np.testing.assert_array_equal(state.vector, c)
    rng = np.random.default_rng(2)
    state = model.update_item(state, _evidence(rng, 1))
    assert state.status == "warming"
    state = model.update_item(state, _evidence(rng, 2, start=1))
    assert state.status == "warm" and state.positives == 3


def test_redelivery_does_not_double_count() -> None:
    rng = np.random.default_rng(3)
    model = ShrinkageWarmup()
    c = rng.normal(size=D).astype(np.float32)
    ev = _evidence(rng, 7)
    once = model.update_item(ItemWarmState.new("i", c), ev)
    twice = model.update_item(once, ev)
    interleaved = model.update_item(model.update_item(ItemWarmState.new("i", c), ev[:4]), ev[2:])
    for other in (twice, interleaved):
        np.testing.assert_allclose(other.vector, once.vector, rtol=1e-6)
        assert other.interactions == once.interactions == 7
        assert other.evidence == once.evidence


def test_user_update_and_validation() -> None:
    model = build_shrinkage(ShrinkageConfig(user_prior_strength=1.0))
    u = UserWarmState.new("u", np.zeros(D, dtype=np.float32))
    item = np.full(D, 0.5, dtype=np.float32)
    u2 = model.update_user(u, [Evidence("a", item, 1.0, True)])
    assert float(u2.vector @ item) > 0
    with pytest.raises(InvalidInputError, match="counterpart"):
        model.update_user(u, [Evidence("b", np.zeros(D + 1, dtype=np.float32), 1.0, True)])
    with pytest.raises(InvalidInputError, match="delta_max"):
        ShrinkageWarmup(delta_max=0)


def test_fit_behavior_scale_recovers_planted_scale() -> None:
    rng = np.random.default_rng(4)
    m = rng.normal(size=(200, D)).astype(np.float32)
    c = (2.5 * m + 0.01 * rng.normal(size=m.shape)).astype(np.float32)
    assert fit_behavior_scale(c, m) == pytest.approx(2.5, rel=1e-2)


def test_new_user_with_zero_prior_moves_to_the_items_it_likes() -> None:
    model = ShrinkageWarmup(user_prior_strength=1.0, delta_max=0.1)
    item = np.full(D, 0.5, dtype=np.float32)
    u = model.update_user(
        UserWarmState.new("new", np.zeros(D, dtype=np.float32)), [Evidence("a", item, 1.0, True)]
    )
    # posterior mean with κ=1 and one observation: halfway to the item, not held at the zero prior
    np.testing.assert_allclose(u.vector, 0.5 * item, rtol=1e-6)
