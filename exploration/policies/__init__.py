"""Bandit policies: the :class:`Policy` interface, VW implementations and baselines.

Build one from configuration with :func:`build_policy`.
"""

from __future__ import annotations

from collections.abc import Mapping

from coldstart.decisions import Decision
from coldstart.errors import InvalidInputError
from exploration.config import (
    EpsilonGreedyPolicyConfig,
    GreedyPolicyConfig,
    PolicyConfig,
    UniformPolicyConfig,
    VWPolicyConfig,
)
from exploration.policies.base import Arm, ArmBatch, Choice, Context, Policy
from exploration.policies.baselines import GreedyPolicy, UniformPolicy
from exploration.policies.sampling import ChosenSlot
from exploration.policies.vw import VWPolicy

__all__ = [
    "Arm",
    "ArmBatch",
    "Choice",
    "ChosenSlot",
    "Context",
    "Policy",
    "build_policy",
    "decision_arms",
    "learn_decision",
    "learn_slot",
]


def build_policy(config: PolicyConfig, *, seed: int = 0) -> Policy:
    """Instantiate the policy a config describes."""

    if isinstance(config, VWPolicyConfig):
        return VWPolicy(config, seed=seed)
    if isinstance(config, EpsilonGreedyPolicyConfig):
        vw = VWPolicyConfig(
            exploration="epsilon", epsilon=config.epsilon, min_propensity=config.min_propensity
        )
        return VWPolicy(vw, seed=seed)
    if isinstance(config, UniformPolicyConfig):
        return UniformPolicy(min_propensity=config.min_propensity, seed=seed)
    if isinstance(config, GreedyPolicyConfig):
        return GreedyPolicy(config.feature, min_propensity=config.min_propensity, seed=seed)
    raise AssertionError(f"unknown policy config {config!r}")  # pragma: no cover


def decision_arms(decision: Decision) -> list[Arm]:
    """The arms of a logged decision, rebuilt from its candidates' logged features."""
    return [Arm(item_id=c.item_id, features=dict(c.features)) for c in decision.candidates]


def learn_decision(policy: Policy, decision: Decision, rewards: Mapping[str, float]) -> int:
    """Learn every slot of a logged decision (see :meth:`Policy.learn_slots`); returns events learned."""
    return policy.learn_slots(
        decision.context,
        decision_arms(decision),
        [(s.item_id, s.propensity) for s in sorted(decision.slots, key=lambda s: s.position)],
        rewards,
    )


def learn_slot(policy: Policy, decision: Decision, position: int, reward: float) -> None:
    """Learn one slot of a logged decision on the arms that were left when it was drawn."""
    slots = sorted(decision.slots, key=lambda s: s.position)
    slot = next((s for s in slots if s.position == position), None)
    if slot is None:
        raise InvalidInputError("position", position, f"decision {decision.decision_id} has no such slot")
    earlier = {s.item_id for s in slots if s.position < position}
    arms = [a for a in decision_arms(decision) if a.item_id not in earlier]
    index = next(i for i, a in enumerate(arms) if a.item_id == slot.item_id)
    policy.learn(decision.context, arms, index, slot.propensity, reward)
