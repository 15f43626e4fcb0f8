"""The logged bandit data OPE and the exports read: decisions flattened into slot-level rounds.

One *round* is one filled slot ``(decision, position)``; its reward comes from the interactions
joined to the decision (:func:`join_rewards`, the same rule as the learner: interactions with the
decision's ``decision_id`` and the slot's item, within ``RewardConfig.window_s`` after the decision,
reward = max over their kinds' rewards, ``default_reward`` when none arrived).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
from numpy.typing import NDArray

from coldstart.decisions import Decision
from coldstart.errors import InvalidInputError
from exploration.config import RewardConfig
from feature_repo.records import InteractionLike

SlotKey = tuple[str, int]
"""``(decision_id, position)`` of one slot."""


def join_rewards(
    decisions: Sequence[Decision], interactions: Iterable[InteractionLike], config: RewardConfig | None = None
) -> dict[SlotKey, float]:
    """Reward of every slot of ``decisions``.

    Parameters
    ----------
    decisions
        Logged decisions.
    interactions
        Interactions (``coldstart.contracts.Interaction`` or any object with the same fields); those
        without a ``decision_id`` are ignored.
    config
        Reward window and reward per kind (default: ``RewardConfig()``, as the learner uses).

    Returns
    -------
    ``{(decision_id, position): reward}`` for every slot of every decision.
    """
    cfg = config or RewardConfig()
    window = timedelta(seconds=cfg.window_s)
    by_decision: dict[str, Decision] = {d.decision_id: d for d in decisions}
    best: dict[SlotKey, float] = {}
    for it in interactions:
        if it.decision_id is None or it.decision_id not in by_decision or it.kind not in cfg.by_kind:
            continue
        d = by_decision[it.decision_id]
        if not d.ts <= it.ts <= d.ts + window:
            continue
        for slot in d.slots:
            if slot.item_id == it.item_id:
                key = (d.decision_id, slot.position)
                reward = cfg.by_kind[it.kind]
                best[key] = max(best.get(key, reward), reward)
    return {
        (d.decision_id, s.position): best.get((d.decision_id, s.position), cfg.default_reward)
        for d in decisions
        for s in d.slots
    }


@dataclass(frozen=True)
class BanditLog:
    """Slot-level rounds of a list of decisions (all arrays ``(n_rounds,)``, in decision then position
    order).

    Parameters
    ----------
    decisions
        The decisions, in log order; ``decision_index`` points into them.
    decision_index, position
        Which decision and slot position each round is.
    chosen
        Index of the slot's item in ``decisions[decision_index].candidates``.
    pscore
        Logged propensity of the slot (conditional on the earlier positions).
    reward
        The slot's reward.
    """

    decisions: tuple[Decision, ...]
    decision_index: NDArray[np.int64]
    position: NDArray[np.int64]
    chosen: NDArray[np.int64]
    pscore: NDArray[np.float64]
    reward: NDArray[np.float64]
    _prefixes: tuple[tuple[int, ...], ...] = field(repr=False, default=())

    @property
    def n_rounds(self) -> int:
        """Number of rounds (slots)."""
        return int(self.reward.shape[0])

    @property
    def n_decisions(self) -> int:
        """Number of decisions with at least one round."""
        return len(self.decisions)

    def prefix(self, round_: int) -> tuple[int, ...]:
        """Candidate indices placed at the earlier positions of this round's decision."""
        return self._prefixes[round_]

    def available(self, round_: int) -> NDArray[np.bool_]:
        """``(n_candidates,)`` mask of the candidates still available at this round's position."""
        d = self.decisions[int(self.decision_index[round_])]
        mask = np.ones(len(d.candidates), dtype=bool)
        mask[list(self._prefixes[round_])] = False
        return mask

    @classmethod
    def from_decisions(
        cls,
        decisions: Sequence[Decision],
        rewards: Mapping[SlotKey, float],
        *,
        positions: Sequence[int] | None = None,
        default_reward: float | None = None,
    ) -> BanditLog:
        """Flatten decisions into rounds.

        Parameters
        ----------
        decisions
            Logged decisions; a slot whose item is not among its decision's candidates is an error.
        rewards
            ``{(decision_id, position): reward}`` (see :func:`join_rewards`).
        positions
            Keep only these slot positions (``None`` = all).
        default_reward
            Reward of a slot missing from ``rewards``; ``None`` makes a missing reward an error.
        """
        keep = None if positions is None else set(positions)
        kept: list[Decision] = []
        d_idx: list[int] = []
        pos: list[int] = []
        chosen: list[int] = []
        pscore: list[float] = []
        reward: list[float] = []
        prefixes: list[tuple[int, ...]] = []
        seen: set[str] = set()
        for d in decisions:
            if d.decision_id in seen:
                raise InvalidInputError("decisions.decision_id", d.decision_id, "duplicate decision")
            seen.add(d.decision_id)
            index = {c.item_id: i for i, c in enumerate(d.candidates)}
            slots = sorted(d.slots, key=lambda s: s.position)
            rows = []
            prefix: list[int] = []
            for s in slots:
                if s.item_id not in index:
                    raise InvalidInputError(
                        f"decisions[{d.decision_id}].slots.item_id", s.item_id, "is not among the candidates"
                    )
                key = (d.decision_id, s.position)
                if key in rewards:
                    r = float(rewards[key])
                elif default_reward is not None:
                    r = float(default_reward)
                else:
                    raise InvalidInputError("rewards", key, "no reward for this slot")
                if keep is None or s.position in keep:
                    rows.append((s.position, index[s.item_id], s.propensity, r, tuple(prefix)))
                prefix.append(index[s.item_id])
            if not rows:
                continue
            kept.append(d)
            for p, c, ps, r, pre in rows:
                d_idx.append(len(kept) - 1)
                pos.append(p)
                chosen.append(c)
                pscore.append(ps)
                reward.append(r)
                prefixes.append(pre)
        return cls(
            decisions=tuple(kept),
            decision_index=np.asarray(d_idx, dtype=np.int64),
            position=np.asarray(pos, dtype=np.int64),
            chosen=np.asarray(chosen, dtype=np.int64),
            pscore=np.asarray(pscore, dtype=np.float64),
            reward=np.asarray(reward, dtype=np.float64),
            _prefixes=tuple(prefixes),
        )
