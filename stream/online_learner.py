"""The learner's Kafka-free core: decisions and interactions in, the learned policy and its versioned
checkpoints (each with the resume point a successor starts from) out. ``stream.learn_worker`` feeds it
from Kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from coldstart.contracts import Interaction
from coldstart.decisions import Decision
from coldstart.errors import InvalidInputError
from exploration.config import ExplorationSettings
from exploration.model_store import ModelStore, load_policy
from exploration.policies import Policy, build_policy, learn_slot
from exploration.rewards import RewardJoiner, SlotReward
from stream.warmup_stage import WarmupStats

log = logging.getLogger(__name__)


@dataclass
class LearnerStats:
    """Counters of one learner run (``warmup``: the warm-up stage's, when it ran)."""

    decisions: int = 0
    interactions: int = 0
    malformed: int = 0
    learned: int = 0
    checkpoints: int = 0
    last_version: str | None = None
    rewards: dict[str, int] = field(default_factory=lambda: {"max_reward": 0, "window": 0})
    warmup: WarmupStats | None = None


class OnlineLearner:
    """The Kafka-free core: decisions and interactions in, learned policy and checkpoints out.

    Parameters
    ----------
    settings
        Exploration settings (policy, reward window and kinds, checkpoint period).
    model_store
        Where checkpoints go; the newest one is the starting point (with *its* policy config: changing
        ``exploration.policy`` takes effect on an empty store, i.e. a new model).
    seed
        Policy seed when the store is empty.
    clock
        Epoch seconds (reward windows, checkpoint period).
    """

    def __init__(
        self,
        settings: ExplorationSettings,
        model_store: ModelStore,
        *,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.model_store = model_store
        self.clock = clock
        self.seed = seed
        self.stats = LearnerStats()
        self.reload()

    def reload(self) -> None:
        """Start over from the newest checkpoint in the store (a member taking over the policy from
        another): its policy and count, no open reward windows."""
        latest = self.model_store.latest()
        self.policy: Policy
        if latest is not None:
            self.policy = load_policy(self.model_store, latest.version)
            self.config = latest.policy_config()
            self.seed = latest.seed
            self.version: str | None = latest.version
            self._learned_total = latest.n_learned
        else:
            self.config = self.settings.policy
            self.policy = build_policy(self.config, seed=self.seed)
            self.version = None
            self._learned_total = 0
        self.joiner = RewardJoiner(self.settings.rewards, clock=self.clock)
        resume = latest.state if latest is not None else {}
        # where the checkpoint's reading stopped and what it had learned of the decisions read
        self._read: dict[str, int] = dict(resume.get("positions", {}))
        self._expired_through = float(resume.get("expired_through", float("-inf")))
        self._final: dict[str, list[int]] = dict(resume.get("final", {}))
        self._closed_early: set[str] = set(resume.get("closed_early", ()))
        self.positions: dict[str, int] = {}  # "topic:partition" -> next offset read (set by the worker)
        self.stats.last_version = self.version
        self._since_checkpoint = 0
        self._last_checkpoint = self.clock()

    def on_decision(
        self, decision: Decision, *, source: str | None = None, offset: int | None = None
    ) -> list[SlotReward]:
        """Open a decision's reward window (and learn slots already final). ``source`` ("topic:partition")
        and ``offset`` say where it was read: a decision the checkpoint this learner resumed from had
        read already is not learned again (closed ones are skipped, open ones keep their learned slots)."""
        self.stats.decisions += 1
        if self._learned_before(decision, source, offset):
            self.joiner.mark_closed(decision.decision_id)
            return []
        final = self._final.get(decision.decision_id, ())
        return self._learn(self.joiner.add_decision(decision, final=final))

    def _learned_before(self, decision: Decision, source: str | None, offset: int | None) -> bool:
        read = self._read.get(source) if source is not None else None
        if read is None or offset is None or offset >= read:
            return False  # read after the checkpoint: new to this policy
        if decision.ts.timestamp() + self.settings.rewards.window_s <= self._expired_through:
            return True  # its window had closed: every slot is in the checkpoint
        return decision.decision_id in self._closed_early

    def on_interaction(self, interaction: Interaction) -> list[SlotReward]:
        """Join one interaction; learn the slots it made final."""
        self.stats.interactions += 1
        return self._learn(self.joiner.add_interaction(interaction))

    def tick(self, *, force_checkpoint: bool = False) -> str | None:
        """Close expired windows, learn them, checkpoint when due; returns a new version or ``None``."""
        self._learn(self.joiner.expire())
        due = self.clock() - self._last_checkpoint >= self.settings.checkpoint_interval_s
        if self._since_checkpoint and (due or force_checkpoint):
            return self.checkpoint()
        return None

    def checkpoint(self) -> str:
        """Publish the policy as a new version now."""
        cp = self.model_store.publish(
            self.policy.to_bytes(),
            config=self.config,
            seed=self.seed,
            n_learned=self._learned_total,
            parent=self.version,
            state={**self.joiner.snapshot(), "positions": dict(self.positions)},
        )
        self.version = cp.version
        self._since_checkpoint = 0
        self._last_checkpoint = self.clock()
        self.stats.checkpoints += 1
        self.stats.last_version = cp.version
        log.info("checkpoint %s (%d events learned in total)", cp.version, self._learned_total)
        return cp.version

    def _learn(self, finals: list[SlotReward]) -> list[SlotReward]:
        for r in finals:
            try:
                learn_slot(self.policy, r.decision, r.position, r.reward)
            except InvalidInputError as exc:
                log.warning("decision %s slot %d not learnable: %s", r.decision.decision_id, r.position, exc)
                continue
            self.stats.learned += 1
            self.stats.rewards[r.closed_by] = self.stats.rewards.get(r.closed_by, 0) + 1
            self._learned_total += 1
            self._since_checkpoint += 1
        return finals
