"""Posterior warm-up math: the regression it approximates, the gate, no-behaviour, re-delivery, and
the defect it fixes (a few users' shared direction must not outrank the direction they differ in)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from coldstart.errors import InvalidInputError
from models.warmup import Evidence, ItemWarmState, UserWarmState
from models.warmup.posterior import (
    PosteriorCalibration,
    PosteriorWarmup,
    SideCalibration,
    fit_posterior_calibration,
)

D = 8


def _calibration(users: np.ndarray, y_pos: float = 1.0, y_neg: float = 0.0) -> PosteriorCalibration:
    side = SideCalibration.fit(users, y_pos, y_neg)
    return PosteriorCalibration(item=side, user=side)


def test_matches_the_exact_regression_when_the_users_span_s() -> None:
    """With S equal to the evidence's own Gram / n, δ is the exact ridge posterior mean."""
    rng = np.random.default_rng(0)
    users = rng.normal(size=(12, D))
    cal = _calibration(users, y_pos=2.0)
    model = PosteriorWarmup(cal, prior_strength=3.0)
    c = rng.normal(size=D).astype(np.float32)
    ev = [Evidence(f"e{j}", users[j].astype(np.float32), 1.0, True) for j in range(12)]
    got = model.update_item(ItemWarmState.new("i", c), ev).vector
    kappa = 3.0 * float(np.mean(cal.item.spectrum))
    x = users.astype(np.float32).astype(np.float64)
    want = c + np.linalg.solve(kappa * np.eye(D) + x.T @ x, x.T @ (2.0 - x @ c.astype(np.float64)))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_no_evidence_gate_and_infinite_prior_serve_the_content_vector() -> None:
    rng = np.random.default_rng(1)
    users = rng.normal(size=(50, D))
    cal = _calibration(users)
    c = rng.normal(size=D).astype(np.float32)
    ev = [Evidence(f"e{j}", users[j].astype(np.float32), 1.0, True) for j in range(3)]
    assert np.array_equal(PosteriorWarmup(cal).update_item(ItemWarmState.new("i", c), []).vector, c)
    gated = PosteriorWarmup(cal, min_positives=4).update_item(ItemWarmState.new("i", c), ev)
    assert np.array_equal(gated.vector, c) and gated.positives == 3
    more = PosteriorWarmup(cal, min_positives=4).update_item(
        gated, [Evidence("e9", users[9].astype(np.float32), 1.0, True)]
    )
    assert not np.array_equal(more.vector, c)  # the gate opens at the 4th positive
    off = PosteriorWarmup(cal, prior_strength=math.inf).update_item(ItemWarmState.new("i", c), ev)
    assert np.array_equal(off.vector, c)
    with pytest.raises(InvalidInputError):
        PosteriorWarmup(cal, prior_strength=0.0)


def test_a_redelivered_event_changes_nothing() -> None:
    rng = np.random.default_rng(2)
    users = rng.normal(size=(20, D))
    model = PosteriorWarmup(_calibration(users))
    c = rng.normal(size=D).astype(np.float32)
    ev = [Evidence(f"e{j}", users[j].astype(np.float32), 1.0, True) for j in range(5)]
    once = model.update_item(ItemWarmState.new("i", c), ev)
    twice = model.update_item(once, ev)
    assert np.array_equal(once.vector, twice.vector) and twice.interactions == 5


def test_a_positive_raises_its_users_score_toward_the_target_and_a_negative_lowers_it() -> None:
    rng = np.random.default_rng(3)
    users = rng.normal(size=(40, D))
    model = PosteriorWarmup(_calibration(users, y_pos=5.0, y_neg=-5.0), prior_strength=1.0, min_positives=0)
    c = np.zeros(D, dtype=np.float32)
    u = users[0].astype(np.float32)
    up = model.update_item(ItemWarmState.new("i", c), [Evidence("p", u, 1.0, True)]).vector
    down = model.update_item(ItemWarmState.new("i", c), [Evidence("n", u, -0.5, False)]).vector
    assert float(u @ up) > 0.0  # (the expected Gram overstates one event's leverage: κ absorbs it)
    assert float(u @ down) < 0.0


def test_a_shared_direction_does_not_dominate() -> None:
    """Users = a large common component + a small taste direction. Evidence from users with taste +1
    must rank a taste +1 user above a taste −1 user (the shared part says nothing about taste)."""
    rng = np.random.default_rng(4)
    common = np.zeros(D)
    common[0] = 5.0
    taste = np.zeros(D)
    taste[1] = 1.0
    signs = rng.choice([-1.0, 1.0], size=400)
    users = common + signs[:, None] * taste + 0.1 * rng.normal(size=(400, D))
    model = PosteriorWarmup(_calibration(users, y_pos=30.0, y_neg=25.0), prior_strength=1.0)
    likers = users[signs > 0][:5].astype(np.float32)
    ev = [Evidence(f"e{j}", x, 1.0, True) for j, x in enumerate(likers)]
    v = model.update_item(ItemWarmState.new("i", np.zeros(D, dtype=np.float32)), ev).vector
    plus = users[signs > 0][10:].mean(0)
    minus = users[signs < 0].mean(0)
    assert float(plus @ v) > float(minus @ v)


def test_users_warm_up_from_item_counterparts_and_calibration_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    shared = np.ones(D)  # users like items along a shared direction: positive pairs score > 0
    user_vecs = (shared + 0.3 * rng.normal(size=(30, D))).astype(np.float32)
    item_vecs = (shared + 0.3 * rng.normal(size=(40, D))).astype(np.float32)
    pu = rng.integers(0, 30, size=200)
    pi = rng.integers(0, 40, size=200)
    cal = fit_posterior_calibration(user_vecs, item_vecs, pu, pi, seed=0)
    path = tmp_path / "cal.npz"
    cal.save(path)
    loaded = PosteriorCalibration.load(path)
    np.testing.assert_array_equal(loaded.user.spectrum, cal.user.spectrum)
    assert loaded.item.target_positive == cal.item.target_positive
    model = PosteriorWarmup(loaded)
    state = model.update_user(
        UserWarmState.new("u", np.zeros(D, dtype=np.float32)), [Evidence("e", item_vecs[0], 1.0, True)]
    )
    assert float(state.vector @ item_vecs[0]) > 0.0
    with pytest.raises(InvalidInputError):
        fit_posterior_calibration(user_vecs, item_vecs, pu[:0], pi[:0])
