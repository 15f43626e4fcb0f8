"""The online decision↔interaction join (reward window, reward per kind)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coldstart.contracts import Interaction
from coldstart.decisions import Candidate, Decision, Slot
from exploration.config import RewardConfig
from exploration.ope.log import join_rewards
from exploration.rewards import RewardJoiner

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def decision(did: str, items: list[str], ts: datetime = T0) -> Decision:
    return Decision(
        decision_id=did,
        ts=ts,
        user_id="u",
        policy="p",
        model_version="v0",
        candidates=[Candidate(item_id=i, probability=1 / len(items), score=0.0) for i in items],
        slots=[Slot(item_id=i, position=n, propensity=0.5, score=0.0) for n, i in enumerate(items[:2])],
    )


def inter(eid: str, did: str | None, item: str, kind: str, dt_s: float) -> Interaction:
    return Interaction(
        event_id=eid,
        user_id="u",
        item_id=item,
        kind=kind,  # type: ignore[arg-type]
        ts=T0 + timedelta(seconds=dt_s),
        decision_id=did,
        value=4.0 if kind == "rating" else None,
    )


class Clock:
    def __init__(self) -> None:
        self.t = T0.timestamp()

    def __call__(self) -> float:
        return self.t


def test_click_is_final_at_once_and_window_closes_the_rest() -> None:
    clock = Clock()
    j = RewardJoiner(RewardConfig(window_s=60), clock=clock)
    assert j.add_decision(decision("d1", ["a", "b", "c"])) == []
    assert j.add_interaction(inter("e0", "d1", "b", "impression", 1)) == []  # reward 0, not final
    out = j.add_interaction(inter("e1", "d1", "a", "click", 2))
    assert [(r.item_id, r.position, r.reward, r.closed_by) for r in out] == [("a", 0, 1.0, "max_reward")]
    assert j.add_interaction(inter("e1", "d1", "a", "click", 2)) == []  # duplicate event
    clock.t += 30
    assert j.expire() == []
    clock.t += 31
    out = j.expire()
    assert [(r.item_id, r.position, r.reward, r.closed_by) for r in out] == [("b", 1, 0.0, "window")]
    assert j.pending == 0
    assert j.add_interaction(inter("e2", "d1", "b", "click", 3)) == []  # too late: closed
    assert j.late_interactions == 1


def test_interactions_outside_the_window_or_unknown_kind_do_not_count() -> None:
    clock = Clock()
    j = RewardJoiner(RewardConfig(window_s=60, by_kind={"click": 1.0, "add_to_cart": 0.5}), clock=clock)
    j.add_decision(decision("d1", ["a", "b"]))
    assert j.add_interaction(inter("e1", "d1", "a", "click", 61)) == []  # event time past the window
    assert j.add_interaction(inter("e2", "d1", "b", "rating", 5)) == []  # kind without a reward
    assert j.add_interaction(inter("e3", "d1", "b", "add_to_cart", 5)) == []  # 0.5 < max: not final yet
    clock.t += 61
    rewards = {r.item_id: r.reward for r in j.expire()}
    assert rewards == {"a": 0.0, "b": 0.5}


def test_interaction_before_its_decision_is_buffered() -> None:
    clock = Clock()
    j = RewardJoiner(RewardConfig(window_s=60), clock=clock)
    assert j.add_interaction(inter("e1", "d9", "a", "click", 1)) == []
    assert "d9" in j.open_decision_ids()
    out = j.add_decision(decision("d9", ["a", "b"]))
    assert [(r.item_id, r.reward) for r in out] == [("a", 1.0)]


def test_online_join_agrees_with_the_offline_join() -> None:
    clock = Clock()
    cfg = RewardConfig(window_s=60, by_kind={"click": 1.0, "add_to_cart": 0.5, "impression": 0.0})
    decisions = [decision(f"d{i}", ["a", "b", "c"], T0 + timedelta(seconds=i)) for i in range(5)]
    inters = [
        inter("x1", "d0", "a", "click", 3),
        inter("x2", "d1", "b", "add_to_cart", 10),
        inter("x3", "d2", "a", "impression", 10),
        inter("x4", "d3", "b", "click", 100),  # outside
        inter("x5", "d4", "b", "add_to_cart", 20),
        inter("x6", "d4", "b", "click", 30),
    ]
    j = RewardJoiner(cfg, clock=clock)
    online: dict[tuple[str, int], float] = {}
    for d in decisions:
        for r in j.add_decision(d):
            online[(r.decision.decision_id, r.position)] = r.reward
    for it in inters:
        for r in j.add_interaction(it):
            online[(r.decision.decision_id, r.position)] = r.reward
    clock.t += 1000
    for r in j.expire():
        online[(r.decision.decision_id, r.position)] = r.reward
    assert online == join_rewards(decisions, inters, cfg)
