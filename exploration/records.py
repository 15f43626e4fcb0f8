"""Typed records of exploration decisions (cross the exploration/, stream/, api/ and analytics boundaries).

A decision is what the bandit did for one request: the candidates it saw, the pmf it sampled from and
the slots it filled. It is logged to the ``decisions`` topic and to the offline store, in a form that
obp's estimators and VW's dsjson can be built from (see ``exploration/export``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field


class Candidate(BaseModel):
    """One candidate the policy scored.

    ``probability`` is the policy's probability of putting this item in the *first* slot (the pmf
    sampled from), ``score`` the model's score (higher is better).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    probability: float = Field(ge=0.0, le=1.0)
    score: float
    features: dict[str, float] = Field(default_factory=dict)


class Slot(BaseModel):
    """One filled exploration slot. ``propensity`` is the probability with which this item was drawn
    at this position (sampling without replacement, conditional on the earlier positions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    position: int = Field(ge=0)
    propensity: float = Field(gt=0.0, le=1.0)
    score: float


class Decision(BaseModel):
    """Everything needed to replay and evaluate one exploration decision off-policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    decision_id: str
    ts: datetime
    user_id: str
    context: dict[str, float | str] = Field(default_factory=dict)
    policy: str
    model_version: str
    candidates: list[Candidate]
    slots: list[Slot]


_SCHEMA_VERSION = Decision.model_fields["schema_version"].default


@dataclass(frozen=True, eq=False)
class DecisionDraft:
    """A decision as the slot service makes it: the candidates kept as columns, not as objects.

    Building and validating the :class:`Decision` (100 candidate records) and its JSON costs ~0.5 ms of
    CPU per request; a draft is cheap to make and to pickle, so the request path hands drafts to the
    sinks and :meth:`to_decision` / :meth:`to_json` run where they are needed (the decision-log
    process, the offline writer's thread), off the request.

    Parameters
    ----------
    item_ids
        Candidate item ids, length ``n``.
    probabilities, scores
        Shape ``(n,)``: the pmf sampled from (first position) and the model's scores.
    feature_names
        Length ``f``: names of the columns of ``features``.
    features
        Shape ``(n, f)``: the candidates' features as the policy saw them.
    slots
        The filled slots, in position order.
    """

    decision_id: str
    ts: datetime
    user_id: str
    context: dict[str, float | str]
    policy: str
    model_version: str
    item_ids: Sequence[str]
    probabilities: NDArray[np.float64]
    scores: NDArray[np.float64]
    feature_names: tuple[str, ...]
    features: NDArray[np.float64]
    slots: tuple[Slot, ...]

    def _payload(self) -> dict[str, Any]:
        """The decision as plain JSON-able values (what :class:`Decision` validates and orjson dumps)."""
        names = self.feature_names
        return {
            "schema_version": _SCHEMA_VERSION,
            "decision_id": self.decision_id,
            "ts": self.ts,
            "user_id": self.user_id,
            "context": self.context,
            "policy": self.policy,
            "model_version": self.model_version,
            "candidates": [
                {"item_id": i, "probability": p, "score": c, "features": dict(zip(names, r, strict=True))}
                for i, p, c, r in zip(
                    self.item_ids,
                    self.probabilities.tolist(),
                    self.scores.tolist(),
                    self.features.tolist(),
                    strict=True,
                )
            ],
            "slots": [
                {"item_id": s.item_id, "position": s.position, "propensity": s.propensity, "score": s.score}
                for s in self.slots
            ],
        }

    def to_decision(self) -> Decision:
        """The validated :class:`Decision` (rules of its fields enforced: pmf within [0, 1]...)."""
        # validated in pydantic-core from plain dicts (cheaper than Python-side constructions)
        return Decision.model_validate(self._payload())

    def to_json(self) -> bytes:
        """The wire form: UTF-8 JSON that :class:`Decision` parses to :meth:`to_decision`.

        Built with orjson from the columns (~2x cheaper than validating and dumping the model); the
        rules pydantic would check on the way are checked here on the arrays (a draft that breaks one
        goes through :meth:`to_decision`, which raises the validation error).
        """
        import orjson

        p = self.probabilities
        n = len(self.item_ids)
        if not (
            p.shape == (n,)
            and self.scores.shape == (n,)
            and self.features.shape == (n, len(self.feature_names))
            and bool(np.all((p >= 0.0) & (p <= 1.0)))
        ):
            return self.to_decision().model_dump_json().encode("utf-8")
        out: bytes = orjson.dumps(self._payload(), option=orjson.OPT_UTC_Z)
        return out


#: What the slot service hands to the decision sinks (the service makes drafts; replays, tests and
#: other producers may hand finished decisions).
LoggedDecision = Decision | DecisionDraft


def as_decision(decision: LoggedDecision) -> Decision:
    """The validated :class:`Decision` of a draft (a decision is returned as is)."""
    return decision.to_decision() if isinstance(decision, DecisionDraft) else decision


def decision_json(decision: LoggedDecision) -> bytes:
    """The wire form of a decision or draft (UTF-8 JSON, as on the ``decisions`` topic)."""
    if isinstance(decision, DecisionDraft):
        return decision.to_json()
    return decision.model_dump_json().encode("utf-8")
