"""Conformance suite every bandit policy must pass (river's check_estimator style)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from coldstart.errors import ArtifactError, InvalidInputError
from exploration.config import (
    EpsilonGreedyPolicyConfig,
    GreedyPolicyConfig,
    PolicyConfig,
    UniformPolicyConfig,
    VWPolicyConfig,
)
from exploration.policies import Arm, ArmBatch, Policy, build_policy

CONFIGS: dict[str, PolicyConfig] = {
    "vw-squarecb": VWPolicyConfig(exploration="squarecb", bits=16),
    "vw-epsilon": VWPolicyConfig(exploration="epsilon", bits=16),
    "vw-bag": VWPolicyConfig(exploration="bag", bits=16),
    "vw-cover": VWPolicyConfig(exploration="cover", bits=16),
    "epsilon_greedy": EpsilonGreedyPolicyConfig(),
    "uniform": UniformPolicyConfig(),
    "greedy": GreedyPolicyConfig(),
}


def make(name: str, seed: int = 7) -> Policy:
    return build_policy(CONFIGS[name], seed=seed)


def arms_for(rng: np.random.Generator, n: int) -> list[Arm]:
    return [
        Arm(
            item_id=f"item-{i}",
            features={
                "dot": float(rng.normal()),
                "age_h": float(rng.uniform(0, 3)),
                "sim": float(rng.normal()),
            },
            group=f"seller-{i % 3}",
        )
        for i in range(n)
    ]


def warm_up(policy: Policy, rounds: int = 60) -> None:
    """Some learning so that the model's pmf is no longer uniform."""
    rng = np.random.default_rng(1)
    for _ in range(rounds):
        arms = arms_for(rng, 6)
        ctx = {"device": "mobile", "hour": 3.0}
        choice = policy.choose(ctx, arms, 1)
        slot = choice.slots[0]
        reward = 1.0 if arms[slot.index].features["dot"] > 0 else 0.0
        policy.learn(ctx, arms, slot.index, slot.propensity, reward)


ALL = list(CONFIGS)


@pytest.mark.parametrize("name", ALL)
def test_pmf_is_valid_and_floored(name: str) -> None:
    policy = make(name)
    warm_up(policy)
    rng = np.random.default_rng(2)
    for n in (1, 2, 7, 30):
        arms = arms_for(rng, n)
        pmf, scores = policy.pmf({"device": "desktop"}, arms)
        assert pmf.shape == (n,) and scores.shape == (n,)
        assert np.all(np.isfinite(pmf)) and np.all(np.isfinite(scores))
        assert abs(pmf.sum() - 1.0) < 1e-9
        assert pmf.min() >= policy.min_propensity * (1 - 1e-9)


@pytest.mark.parametrize("name", ALL)
def test_choices_distinct_within_candidates_with_positive_propensity(name: str) -> None:
    policy = make(name)
    warm_up(policy)
    rng = np.random.default_rng(3)
    for k in (1, 3, 8, 12):
        arms = arms_for(rng, 8)
        choice = policy.choose({"device": "tv"}, arms, k)
        ids = [s.item_id for s in choice.slots]
        assert len(ids) == min(k, 8)
        assert len(set(ids)) == len(ids)
        assert set(ids) <= {a.item_id for a in arms}
        assert [s.position for s in choice.slots] == list(range(len(ids)))
        for s in choice.slots:
            assert 0.0 < s.propensity <= 1.0
            assert arms[s.index].item_id == s.item_id
        # the first slot's propensity is exactly its probability in the logged pmf
        first = choice.slots[0]
        assert first.propensity == pytest.approx(choice.pmf[first.index])


@pytest.mark.parametrize("name", ALL)
def test_propensities_are_the_conditional_sampling_probabilities(name: str) -> None:
    """Position-j propensity = pmf[i] / (1 - mass of the arms drawn before): checked exactly and
    against the empirical frequency of the second slot."""
    policy = make(name)
    arms = arms_for(np.random.default_rng(4), 4)
    boosts = np.array([1.0, 3.0, 1.0, 0.5])
    counts: dict[tuple[str, str], int] = {}
    logged: dict[tuple[str, str], float] = {}
    n_draws = 3000
    for _ in range(n_draws):
        choice = policy.choose({}, arms, 2, boosts=boosts)
        a, b = choice.slots
        assert b.propensity == pytest.approx(choice.pmf[b.index] / (1.0 - choice.pmf[a.index]))
        counts[(a.item_id, b.item_id)] = counts.get((a.item_id, b.item_id), 0) + 1
        logged[(a.item_id, b.item_id)] = a.propensity * b.propensity
    if name.startswith("vw") or name == "epsilon_greedy" or name == "greedy":
        return  # model pmfs are fixed without learning, but greedy/vw put ~all mass on one arm
    for pair, c in counts.items():
        if logged[pair] > 0.02:
            assert c / n_draws == pytest.approx(logged[pair], abs=0.03)


@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_result(name: str) -> None:
    results = []
    for _ in range(2):
        policy = make(name, seed=11)
        warm_up(policy)
        rng = np.random.default_rng(5)
        picks = []
        for _ in range(20):
            choice = policy.choose({"device": "mobile"}, arms_for(rng, 10), 3)
            picks.append(tuple((s.item_id, round(s.propensity, 12)) for s in choice.slots))
        results.append(picks)
    assert results[0] == results[1]


@pytest.mark.parametrize("name", ALL)
def test_save_load_identical_predictions(name: str, tmp_path) -> None:
    policy = make(name)
    warm_up(policy)
    arms = arms_for(np.random.default_rng(6), 9)
    before, scores_before = policy.pmf({"device": "mobile", "hour": 5.0}, arms)
    path = tmp_path / "policy.bin"
    policy.save(path)
    fresh = make(name, seed=99)
    fresh.load(path)
    after, scores_after = fresh.pmf({"device": "mobile", "hour": 5.0}, arms)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(scores_before, scores_after)
    # and learning goes on identically from the restored state
    for p in (policy, fresh):
        p.learn({"device": "mobile"}, arms, 2, 0.5, 1.0)
    np.testing.assert_array_equal(policy.pmf({}, arms)[0], fresh.pmf({}, arms)[0])


@pytest.mark.parametrize("name", ALL)
def test_rejects_bad_input(name: str, tmp_path) -> None:
    policy = make(name)
    arms = arms_for(np.random.default_rng(7), 3)
    with pytest.raises(InvalidInputError, match="k"):
        policy.choose({}, arms, 0)
    with pytest.raises(InvalidInputError, match=r"arms\.item_id"):
        policy.choose({}, [*arms, arms[0]], 1)
    with pytest.raises(InvalidInputError, match="propensity"):
        policy.learn({}, arms, 0, 0.0, 1.0)
    with pytest.raises(InvalidInputError, match="boosts"):
        policy.choose({}, arms, 1, boosts=[1.0, -1.0, 1.0])
    with pytest.raises(ArtifactError):
        policy.load_bytes(b"not a model")
    assert policy.choose({}, [], 3).slots == ()


@pytest.mark.parametrize("name", ALL)
def test_per_group_cap(name: str) -> None:
    policy = make(name)
    arms = arms_for(np.random.default_rng(8), 9)  # 3 sellers x 3 items
    for _ in range(30):
        choice = policy.choose({}, arms, 9, max_per_group=1)
        groups = [arms[s.index].group for s in choice.slots]
        assert len(groups) == 3 and len(set(groups)) == 3
        assert all(0 < s.propensity <= 1 for s in choice.slots)


def test_pacing_boost_shifts_the_logged_pmf() -> None:
    policy = make("uniform")
    arms = arms_for(np.random.default_rng(9), 4)
    pmf, _ = policy.pmf({}, arms, boosts=[4.0, 1.0, 1.0, 1.0])
    assert pmf[0] == pytest.approx(4 / 7, rel=1e-3)


BuildFn = Callable[[str], Policy]


def test_vw_text_of_a_batch_is_the_text_of_each_arm() -> None:
    """The vectorised formatter of the serving path writes the same examples as the per-arm one."""
    from exploration.policies.vw import arm_line, arm_lines

    rng = np.random.default_rng(4)
    same_keys = [
        Arm(item_id=f"it em|{i}", features={"dot": float(v), "age": float(rng.random()), "imp": 0.0})
        for i, v in enumerate(rng.normal(size=20))
    ]
    mixed = [
        Arm(item_id="a", features={"x": 1.5}),
        Arm(item_id="b", features={"y": float("nan"), "x": 2.0}),
        Arm(item_id="c", features={"x": 3e13}),
        Arm(item_id="d"),
    ]
    for arms in (same_keys, mixed):
        assert arm_lines(arms) == [arm_line(a) for a in arms]
    assert arm_line(mixed[0]) == "|A x:1500000e-6 |I id=a"
    assert arm_line(mixed[1]) == "|A x:2 |I id=b"  # non-finite value dropped
    assert arm_lines(same_keys)[0].endswith("|I id=it_em_0")


@pytest.mark.parametrize("name", ALL)
def test_a_columnar_arm_batch_is_chosen_exactly_like_the_same_arms_as_objects(name: str) -> None:
    rng = np.random.default_rng(5)
    arms = arms_for(rng, 12)
    names = tuple(arms[0].features)
    batch = ArmBatch(
        [a.item_id for a in arms],
        names,
        np.array([[a.features[f] for f in names] for a in arms]),
        [a.group for a in arms],
    )
    a, b = make(name, seed=3), make(name, seed=3)
    warm_up(a)
    warm_up(b)
    ctx = {"device": "tablet", "hour": 9.0}
    for _ in range(5):
        ca = a.choose(ctx, arms, 4, max_per_group=1)
        cb = b.choose(ctx, batch, 4, max_per_group=1)
        np.testing.assert_array_equal(ca.pmf, cb.pmf)
        assert ca.slots == cb.slots
    assert list(batch) == arms and batch[3] == arms[3]


def test_an_arm_batch_checks_its_shapes() -> None:
    with pytest.raises(InvalidInputError, match="matrix"):
        ArmBatch(["a", "b"], ("dot",), np.zeros((3, 1)))
    with pytest.raises(InvalidInputError, match="groups"):
        ArmBatch(["a", "b"], ("dot",), np.zeros((2, 1)), ["s1"])
    with pytest.raises(InvalidInputError, match="duplicate"):
        make("uniform").pmf({}, ArmBatch(["a", "a"], ("dot",), np.zeros((2, 1))))
