"""The learner's Kafka-free core: join → learn → versioned checkpoints that replicas can load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from coldstart.contracts import Interaction
from coldstart.decisions import Candidate, Decision, Slot
from exploration.config import ExplorationSettings, RewardConfig
from exploration.model_store import LocalModelStore, PolicyHolder, load_policy
from exploration.policies import Arm, build_policy
from stream.online_learner import OnlineLearner

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0.timestamp()

    def __call__(self) -> float:
        return self.t


def decision(n: int, policy, ts: datetime) -> Decision:  # type: ignore[no-untyped-def]
    arms = [Arm(item_id=f"i{j}", features={"dot": j / 5}) for j in range(5)]
    choice = policy.choose({"segment": "a"}, arms, 2)
    return Decision(
        decision_id=f"d{n}",
        ts=ts,
        user_id="u",
        context={"segment": "a"},
        policy=policy.name,
        model_version="v000000",
        candidates=[
            Candidate(
                item_id=a.item_id, probability=float(choice.pmf[i]), score=0.0, features=dict(a.features)
            )
            for i, a in enumerate(arms)
        ],
        slots=[
            Slot(item_id=s.item_id, position=s.position, propensity=s.propensity, score=s.score)
            for s in choice.slots
        ],
    )


def test_learner_checkpoints_what_it_learned_and_resumes(tmp_path) -> None:
    clock = Clock()
    settings = ExplorationSettings(rewards=RewardConfig(window_s=10), checkpoint_interval_s=5)
    store = LocalModelStore(tmp_path)
    learner = OnlineLearner(settings, store, clock=clock)
    serving = build_policy(settings.policy, seed=0)
    decisions = [decision(n, serving, T0 + timedelta(seconds=n)) for n in range(20)]
    for n, d in enumerate(decisions):
        learner.on_decision(d)
        best = next((s for s in d.slots if s.item_id == "i3"), None)
        if best is not None:
            out = learner.on_interaction(
                Interaction(
                    event_id=f"e{n}", user_id="u", item_id="i3", kind="click", ts=d.ts + timedelta(seconds=1),
                    decision_id=d.decision_id, position=best.position,
                )
            )  # fmt: skip
            assert [r.closed_by for r in out] == ["max_reward"]
    clicked = learner.stats.learned
    assert learner.tick() is None  # nothing due yet: no checkpoint, windows open
    clock.t += 40
    version = learner.tick()
    assert version == "v000001"
    assert learner.stats.learned == 40 and learner.stats.rewards == {
        "max_reward": clicked,
        "window": 40 - clicked,
    }
    # a replica loads exactly the learner's model
    holder = PolicyHolder(build_policy(settings.policy), store)
    assert holder.maybe_reload() and holder.current.version == "v000001"
    arms = [Arm(item_id=f"i{j}", features={"dot": j / 5}) for j in range(5)]
    np.testing.assert_array_equal(
        holder.current.policy.pmf({"segment": "a"}, arms)[0], learner.policy.pmf({"segment": "a"}, arms)[0]
    )
    # a restarted learner resumes from the newest checkpoint
    again = OnlineLearner(settings, store, clock=clock)
    assert again.version == "v000001"
    np.testing.assert_array_equal(
        again.policy.pmf({"segment": "a"}, arms)[0],
        load_policy(store, "v000001").pmf({"segment": "a"}, arms)[0],
    )
    assert store.latest().n_learned == 40  # type: ignore[union-attr]


def _click(n: int, d: Decision, item_id: str, position: int) -> Interaction:
    return Interaction(
        event_id=f"c{n}", user_id="u", item_id=item_id, kind="click", ts=d.ts + timedelta(seconds=1),
        decision_id=d.decision_id, position=position,
    )  # fmt: skip


def test_a_learner_resuming_from_a_checkpoint_learns_no_slot_twice(tmp_path) -> None:
    """The stream is replayed from before the checkpoint (offsets held back for open windows): slots
    of decisions closed by then, and slots of open decisions final by then, are not learned again."""
    clock = Clock()
    settings = ExplorationSettings(rewards=RewardConfig(window_s=10), checkpoint_interval_s=1)
    store = LocalModelStore(tmp_path)
    serving = build_policy(settings.policy, seed=0)
    # decisions 0-4 at T0 (closed by the checkpoint), 5-9 at T0 + 20 s (open, the first slot clicked)
    decisions = [decision(n, serving, T0 + timedelta(seconds=0 if n < 5 else 20)) for n in range(10)]
    clicks = {n: _click(n, d, d.slots[0].item_id, d.slots[0].position) for n, d in enumerate(decisions)}
    first = OnlineLearner(settings, store, clock=clock)
    for n, d in enumerate(decisions[:5]):
        first.on_decision(d, source="decisions:0", offset=n)
    clock.t = T0.timestamp() + 15  # decisions 0-4 expire: 10 slots learned
    first.tick()
    for n, d in enumerate(decisions[5:], start=5):
        first.on_decision(d, source="decisions:0", offset=n)
        first.on_interaction(clicks[n])  # 5 first slots final
    first.positions = {"decisions:0": 10}
    clock.t += 2
    assert first.tick() == "v000002"
    assert store.latest().n_learned == 15  # type: ignore[union-attr]
    # the learner dies; the next owner replays everything from offset 0, then the windows close
    second = OnlineLearner(settings, store, clock=clock)
    for n, d in enumerate(decisions):
        second.on_decision(d, source="decisions:0", offset=n)
        second.on_interaction(clicks[n])
    clock.t = T0.timestamp() + 40
    second.tick(force_checkpoint=True)
    assert second.stats.learned == 5  # only the open decisions' second slots
    assert store.latest().n_learned == 20  # type: ignore[union-attr]  # every slot exactly once
