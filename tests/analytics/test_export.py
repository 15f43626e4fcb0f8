"""Exports: obp bandit feedback and VW dsjson, read back by VW's own dsjson parser."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import vowpalwabbit

from coldstart.errors import InvalidInputError
from exploration.export import iter_dsjson, to_dsjson, to_obp
from exploration.policies import decision_arms
from exploration.policies.vw import arm_line, shared_line
from tests.analytics.synth import simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(n_decisions=120, n_candidates=5, k=2, seed=4)


def _features(example):
    return sorted((f, round(v, 6)) for f, v in example.iter_features())


def test_obp_feedback_shapes_and_values(sim):
    fb = to_obp(sim.decisions, sim.rewards)
    n = fb["n_rounds"]
    assert n == sum(len(d.slots) for d in sim.decisions)
    assert fb["action"].shape == fb["position"].shape == fb["reward"].shape == fb["pscore"].shape == (n,)
    assert fb["context"].shape == (n, len(fb["context_names"]))
    assert fb["action_context"].shape == (fb["n_actions"], len(fb["action_context_names"]))
    assert fb["pi_b"].shape == (n, fb["n_actions"], fb["len_list"])
    assert set(fb["context_names"]) == {"u0", "u1", "device=mobile", "device=desktop"}
    # every round maps back to its decision's slot
    by_id = {d.decision_id: d for d in sim.decisions}
    for i in range(n):
        d = by_id[fb["decision_id"][i]]
        slot = next(s for s in d.slots if s.position == fb["position"][i])
        assert fb["action_ids"][fb["action"][i]] == slot.item_id
        assert fb["pscore"][i] == slot.propensity
        assert fb["reward"][i] == sim.rewards[(d.decision_id, slot.position)]
        assert fb["context"][i, fb["context_names"].index("u0")] == d.context["u0"]
    # obp accepts it (obp is installed by the Makefile; locally its absence only skips this part)
    if not os.environ.get("CI") and importlib.util.find_spec("obp") is None:
        pytest.skip("obp not installed")
    from obp.ope import InverseProbabilityWeighting

    ips = InverseProbabilityWeighting().estimate_policy_value(
        reward=fb["reward"],
        action=fb["action"],
        position=fb["position"],
        pscore=fb["pscore"],
        action_dist=fb["pi_b"],
    )
    assert ips == pytest.approx(fb["reward"].mean(), abs=1e-9)  # the logging policy evaluates to its mean


def test_dsjson_round_trip_through_vw_parser(sim):
    rewards = sim.rewards
    lines = list(iter_dsjson(sim.decisions, rewards))
    assert len(lines) == len(sim.decisions)
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet")
    text_ws = vowpalwabbit.Workspace("--cb_explore_adf --quiet")
    try:
        for d, line in zip(sim.decisions, lines, strict=True):
            obj = json.loads(line)
            slot0 = next(s for s in d.slots if s.position == 0)
            chosen = [c.item_id for c in d.candidates].index(slot0.item_id)
            assert obj["_labelIndex"] == chosen and obj["_label_Action"] == chosen + 1
            assert obj["a"][0] == chosen + 1 and sorted(obj["a"]) == list(range(1, len(d.candidates) + 1))
            assert obj["p"][0] == pytest.approx(d.candidates[chosen].probability)
            assert sum(obj["p"]) == pytest.approx(1.0)
            assert obj["_label_cost"] == -rewards[(d.decision_id, 0)]
            examples = ws.parse(line)
            assert len(examples) == 1 + len(d.candidates)  # shared + one per action
            labelled = [
                (i, c.action, c.cost, c.probability)
                for i, ex in enumerate(examples[1:])
                for c in ex.get_label(vowpalwabbit.LabelType.CONTEXTUAL_BANDIT).costs
            ]
            assert len(labelled) == 1
            i, _, cost, prob = labelled[0]
            assert i == chosen
            assert cost == pytest.approx(-rewards[(d.decision_id, 0)])
            assert prob == pytest.approx(slot0.propensity, rel=1e-6)
            # the same hashed features as the live policy's text examples (exploration.policies.vw)
            text = text_ws.parse([shared_line(d.context), *(arm_line(a) for a in decision_arms(d))])
            ours, live = [_features(e) for e in examples], [_features(e) for e in text]
            assert [[h for h, _ in f] for f in ours] == [[h for h, _ in f] for f in live]
            # values equal up to the text format's 6 significant digits
            np.testing.assert_allclose(
                [v for f in ours for _, v in f], [v for f in live for _, v in f], rtol=1e-5, atol=1e-6
            )
            ws.finish_example(examples)
            text_ws.finish_example(text)
    finally:
        ws.finish()
        text_ws.finish()


def test_dsjson_per_slot_and_learnable(sim):
    """Per-slot lines shrink the action set after each slot; VW learns from them a policy better than
    uniform on fresh decisions (true click probabilities known)."""
    train = simulate(n_decisions=1500, n_candidates=5, k=2, seed=11)
    lines = to_dsjson(train.decisions, train.rewards, per="slot").splitlines()
    assert len(lines) == sum(len(d.slots) for d in train.decisions)
    second = json.loads(lines[1])
    assert len(second["c"]["_multi"]) == len(train.decisions[0].candidates) - 1
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet --epsilon 0.0 -q CA --random_seed 1")
    try:
        for _ in range(2):
            for line in lines:
                ex = ws.parse(line)
                ws.learn(ex)
                ws.finish_example(ex)
        test = simulate(n_decisions=300, n_candidates=5, k=1, seed=12)
        picked, uniform = [], []
        for d, line in zip(test.decisions, iter_dsjson(test.decisions, test.rewards), strict=True):
            obj = json.loads(line)
            ex = ws.parse(line)
            pmf = np.asarray(ws.predict(ex))
            ws.finish_example(ex)
            item = obj["c"]["_multi"][int(np.argmax(pmf))]["I"]
            idx = [f"id={c.item_id}" for c in d.candidates].index(next(iter(item)))
            picked.append(test.mu[(d.decision_id, idx, 0)])
            uniform.append(np.mean([test.mu[(d.decision_id, i, 0)] for i in range(len(d.candidates))]))
    finally:
        ws.finish()
    assert np.mean(picked) > np.mean(uniform) + 0.05


def test_export_validation(sim):
    with pytest.raises(InvalidInputError, match="per"):
        list(iter_dsjson(sim.decisions, sim.rewards, per="page"))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="rewards"):
        to_obp(sim.decisions, {})
    fb = to_obp(sim.decisions, {}, default_reward=0.0, include_pi_b=False)
    assert "pi_b" not in fb and float(fb["reward"].sum()) == 0.0


def test_cli_export_from_offline_store(sim, tmp_path):
    """`coldstart export` reads decisions and interactions from the parquet offline store, joins the
    rewards like the learner and writes what to_obp / to_dsjson give for the same records."""
    from typer.testing import CliRunner

    from cli.main import app
    from exploration.ope import join_rewards
    from feature_repo.offline.parquet import ParquetOfflineLog

    store = ParquetOfflineLog(tmp_path / "offline")
    store.write_decisions(sim.decisions)
    store.write_interactions(sim.interactions)
    store.close()
    base = [
        "export",
        "--offline-dir",
        str(tmp_path / "offline"),
        "--since",
        "2026-01-01",
        "--until",
        "2026-02-01",
    ]
    runner = CliRunner()
    res = runner.invoke(app, [*base, "--format", "obp", "--out", str(tmp_path / "fb.npz")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, [*base, "--format", "dsjson", "--per", "slot", "--out", str(tmp_path / "log.json")]
    )
    assert res.exit_code == 0, res.output
    rewards = join_rewards(sim.decisions, sim.interactions)
    assert rewards == sim.rewards
    expected = to_obp(sim.decisions, rewards)
    with np.load(tmp_path / "fb.npz", allow_pickle=False) as npz:
        got = dict(npz)
    assert int(got["n_rounds"]) == expected["n_rounds"] and int(got["n_actions"]) == expected["n_actions"]
    for key in ("action", "position", "reward", "pscore", "context", "action_context", "pi_b"):
        np.testing.assert_allclose(got[key], expected[key], err_msg=key)
    assert list(got["action_ids"]) == expected["action_ids"]
    lines = (tmp_path / "log.json").read_text().splitlines()
    expected_lines = to_dsjson(sim.decisions, rewards, per="slot").splitlines()
    assert [json.loads(x) for x in lines] == [json.loads(x) for x in expected_lines]  # the store sorts keys
    bad = runner.invoke(app, [*base, "--format", "csv", "--out", str(tmp_path / "x")])
    assert isinstance(bad.exception, InvalidInputError) and bad.exception.param == "format"
